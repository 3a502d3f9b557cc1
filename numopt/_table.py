"""Plain-text tables for the demo and the benchmark scripts."""
from __future__ import annotations

import time

__all__ = ["print_table", "timed", "fmt"]


def fmt(v):
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def print_table(rows, title=None, file=None):
    """Print a list of dicts (same keys) as an aligned table."""
    if title:
        print(f"\n{title}", file=file)
    if not rows:
        return
    keys = list(rows[0])
    cells = [[fmt(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)), file=file)


def timed(fn, *args, repeat=1, **kwargs):
    """Run ``fn`` ``repeat`` times; return (last result, best wall time in seconds)."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return out, best
