"""One table of every bench's headline ratios, printed by `python -m bench` at the end.

Each bench calls `record(...)` where it prints a ratio; the runner prints what was recorded
in one table, so `make bench` ends with the figures side by side (each measured against its
own baseline in the same invocation).
"""

from __future__ import annotations

_ROWS: list[tuple[str, str, str, str]] = []


def record(bench: str, what: str, baseline: str, figure: str) -> None:
    """Remember one headline figure for the closing table."""
    _ROWS.append((bench, what, baseline, figure))


def render() -> str:
    """Return the recorded figures as one text table (empty when nothing was recorded)."""
    if not _ROWS:
        return ""
    headers = ("bench", "what", "baseline", "figure")
    widths = [max(len(h), *(len(r[i]) for r in _ROWS)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in _ROWS]
    return "\n".join(lines)
