"""Numbers as the operator's words show them: in status messages, conditions, events and the CLI.

Measurements reach the operator as floats with every digit of their arithmetic
(``0.9824561403508771``, ``0.95 - 0.05 = 0.8999999999999999``); a person reading a message needs
four significant digits, whole numbers without decimals and no exponent for everyday magnitudes.
Only words are rounded: status fields that are numbers keep the raw value.
"""

from __future__ import annotations

import math

DIGITS = 4
# Below this a number is shown with an exponent (0.0000012 is easier read as 1.2e-06).
_TINY = 1e-4
# Up to this, whole numbers are written out in full.
_WHOLE = 1e15


def number(value: float | None, *, digits: int = DIGITS) -> str:
    """``value`` with ``digits`` significant digits, trailing zeros dropped; ``none`` for a missing value.

    Whole numbers and numbers of ``digits`` or more integer digits are written without decimals
    (``104``, ``12346``), never with an exponent.
    """
    if value is None:
        return "none"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if abs(value) < _WHOLE and (value.is_integer() or magnitude >= digits - 1):
        return str(round(value))
    if abs(value) < _TINY or abs(value) >= _WHOLE:
        return f"{value:.{digits}g}"
    text = f"{value:.{digits - 1 - magnitude}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
