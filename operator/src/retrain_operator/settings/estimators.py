"""Which estimators the built-in trainer may import: the admin's allowlist, read alike by operator and trainer.

The trainer imports the estimator class a policy names, so the rule that keeps a policy from importing
arbitrary code lives here, once: ``sklearn`` and the module prefixes the admin adds (the operator flag
``--estimator-allowlist``, which the operator also hands every training Job in
``RETRAIN_ESTIMATOR_ALLOWLIST``). The operator checks a policy against it before any Job exists; the
trainer checks it again before importing. No path segment may start with ``_``. Pure: no import of
scikit-learn.
"""

from __future__ import annotations

import re
from typing import Final

ALLOWLIST_ENV: Final = "RETRAIN_ESTIMATOR_ALLOWLIST"
DEFAULT_ALLOWLIST: Final[tuple[str, ...]] = ("sklearn",)
DOTTED: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*$")


class InvalidAllowlist(ValueError):
    """An allowlist entry that is not a public module prefix."""


def parse_allowlist(text: str | None) -> tuple[str, ...]:
    """The allowed estimator prefixes: ``sklearn`` plus the comma-separated module prefixes in ``text``."""
    prefixes = list(DEFAULT_ALLOWLIST)
    for item in (text or "").split(","):
        prefix = item.strip().rstrip(".")
        if not prefix:
            continue
        if not DOTTED.match(prefix):
            raise InvalidAllowlist(
                f"{ALLOWLIST_ENV} entry {item.strip()!r} is not a public module prefix like xgboost or "
                "lightgbm.sklearn (letters, digits and '_', dot-separated, no leading '_')"
            )
        if prefix not in prefixes:
            prefixes.append(prefix)
    return tuple(prefixes)


def is_dotted_path(path: str) -> bool:
    """A public import path of a class inside a module: at least two segments, none starting with ``_``."""
    return bool(DOTTED.match(path)) and "." in path


def is_allowed(path: str, allowlist: tuple[str, ...]) -> bool:
    """Whether ``path`` is a public dotted path inside one of the ``allowlist`` module prefixes."""
    return bool(DOTTED.match(path)) and any(path.startswith(f"{prefix}.") for prefix in allowlist)
