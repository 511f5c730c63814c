"""The one capped doubling wait that every retry of the services uses."""


def doubling(first_s: float, step: int, *, cap_s: float) -> float:
    """`first_s` doubled `step` times (0: `first_s` itself), at most `cap_s`."""
    return min(first_s * 2 ** min(max(step, 0), 60), cap_s)
