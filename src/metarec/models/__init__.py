"""The preference network, its persistence, and the models built beside or on it
(the bias model, ensembles, the episodic and stacked rankers)."""
