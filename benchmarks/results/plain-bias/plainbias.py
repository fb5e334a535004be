"""The bias peer as BENCHMARKS.md words it: plain means, no damping.

Judged beside the damped default in `metarec benchmark` (see README.md here)."""

from metarec.peers import Bias


def make(seed: int = 0) -> Bias:
    return Bias(item_damping=0.0, user_damping=0.0, seed=seed)
