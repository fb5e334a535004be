"""metarec."""
