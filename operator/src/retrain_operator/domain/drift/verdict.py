"""From per-feature drift values to one verdict for the trigger, with the features to blame.

Two policies: ``any`` (drift when at least one feature is over its threshold) and ``share`` (drift
when at least ``min_share`` of the compared features are). ``any`` is the sensitive choice for a
handful of features; with hundreds, some feature is always over a threshold by chance, and
``share`` asks for a broad shift. "Over" is strict: a value equal to the threshold is not drift.
For p-values, where smaller means more drift, pass ``drift_when="below"``.

Features that could not be compared (too few samples) are not in ``values`` and do not count
towards the share; with none compared at all the verdict is "no drift" with ``features == 0``,
which the caller should treat as inconclusive rather than as evidence of no drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from retrain_operator.domain.numbers import number

VERDICT_MODES = ("any", "share")
DIRECTIONS = ("above", "below")


@dataclass(frozen=True)
class DriftedFeature:
    """A feature whose statistic crossed its threshold, for the status's list of the most drifted."""

    feature: str
    value: float
    threshold: float


@dataclass(frozen=True)
class DriftVerdict:
    """``top`` holds up to N features over their threshold, the most drifted first."""

    drifted: bool
    features: int
    over: int
    share: float
    top: tuple[DriftedFeature, ...]
    message: str


def _fmt(value: float) -> str:
    """Three significant digits: enough to compare with a threshold, few enough to read."""
    return number(value, digits=3)


def verdict(
    values: Mapping[str, float],
    *,
    threshold: float | Mapping[str, float],
    mode: str = "any",
    min_share: float | None = None,
    top: int = 5,
    statistic: str = "drift",
    drift_when: str = "above",
    threshold_name: str = "threshold",
) -> DriftVerdict:
    """The verdict over ``values`` (feature to statistic) against one threshold or one per feature.

    ``min_share`` in (0, 1] is required with ``mode="share"`` and refused otherwise. ``statistic``
    names the value in the message, ``threshold_name`` the per-feature thresholds ("learned
    threshold"), so a clear verdict reads "highest age 0.0196, below its learned threshold 0.0708".
    """
    if mode not in VERDICT_MODES:
        raise ValueError(f"unknown verdict mode {mode!r}; allowed: {', '.join(VERDICT_MODES)}")
    if drift_when not in DIRECTIONS:
        raise ValueError(f"unknown direction {drift_when!r}; allowed: {', '.join(DIRECTIONS)}")
    if mode == "share" and (min_share is None or not 0.0 < min_share <= 1.0):
        raise ValueError(f"mode 'share' needs min_share in (0, 1], got {min_share}")
    if mode == "any" and min_share is not None:
        raise ValueError("min_share applies only to mode 'share'")
    if top < 0:
        raise ValueError(f"top must be non-negative, got {top}")
    per_feature = isinstance(threshold, Mapping)
    levels: dict[str, float] = {}
    for feature, value in values.items():
        if math.isnan(value):
            raise ValueError(f"feature {feature!r}: {statistic} is NaN")
        if isinstance(threshold, Mapping):
            if feature not in threshold:
                raise ValueError(f"feature {feature!r} has no threshold")
            levels[feature] = float(threshold[feature])
        else:
            levels[feature] = float(threshold)
    if not values:
        return DriftVerdict(False, 0, 0, 0.0, (), f"no feature had enough samples to compare {statistic}")
    above = drift_when == "above"
    sign = 1.0 if above else -1.0
    ranked = sorted(values, key=lambda f: (-sign * values[f], f))
    over = [f for f in ranked if (values[f] > levels[f] if above else values[f] < levels[f])]
    share = len(over) / len(values)
    drifted = bool(over) and (mode == "any" or share >= (min_share or 0.0))
    shown = tuple(DriftedFeature(f, values[f], levels[f]) for f in over[:top])

    cmp = ">" if above else "<"
    if isinstance(threshold, Mapping):
        rule = f"{statistic} {'over' if above else 'under'} its {threshold_name}"
    else:
        rule = f"{statistic} {cmp} {_fmt(float(threshold))}"
    count = f"in {len(over)} of {len(values)} features" if over else f"in none of {len(values)} features"
    if mode == "share":
        count += f" ({share:.0%}; {min_share:.0%} needed)"

    def item(feature: str) -> str:
        level = f" ({threshold_name} {_fmt(levels[feature])})" if per_feature else ""
        return f"{feature} {_fmt(values[feature])}{level}"

    if over:
        listed = ", ".join(item(f) for f in over[:top])
        more = f", and {len(over) - top} more" if len(over) > top else ""
        detail = f": {listed}{more}" if listed else ""
    else:
        first = ranked[0]
        side = "below" if above else "above"
        level = f", {side} its {threshold_name} {_fmt(levels[first])}" if per_feature else ""
        detail = f"; {'highest' if above else 'lowest'} {first} {_fmt(values[first])}{level}"
    return DriftVerdict(drifted, len(values), len(over), share, shown, f"{rule} {count}{detail}")
