"""Percentiles and medians, written out so the report says exactly what was computed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (p in 0..100); None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """count, p50, p90, p99, max (milliseconds in, milliseconds out)."""
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else None,
    }


def median_of(runs: list[dict[str, Any]], key: str) -> Any:
    """Median of one numeric field over repeated runs (None values ignored)."""
    values = [run[key] for run in runs if run.get(key) is not None]
    if not values:
        return None
    return statistics.median(values)
