"""Block sizes of the Triton launchers, in one place: every block is a power of two, a size
beyond what a kernel holds is refused with one RuntimeError (as the C++ kernels' checks are)."""
from __future__ import annotations

import triton


def block(n: int, op: str, what: str, limit: int | None = None) -> int:
    """The power-of-two block covering `n` elements; RuntimeError when n exceeds `limit`."""
    if n < 1:
        raise RuntimeError(f"{op} (Triton): empty {what} ({n})")
    if limit is not None and n > limit:
        raise RuntimeError(f"{op} (Triton): {what} {n} > {limit} is unsupported")
    return triton.next_power_of_2(n)


def fit(n: int, budget: int, per: int) -> int:
    """How many of `n` (a power of two, at least 1, at most block(n)) fit in `budget` elements
    when each takes `per`."""
    return max(1, min(triton.next_power_of_2(max(n, 1)), budget // max(per, 1)))
