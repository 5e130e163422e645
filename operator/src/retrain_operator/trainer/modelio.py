"""Serialize models with skops, and load them only when every type they name is one we trust.

A model file in the registry is written by a training Job but may be read by later Jobs (to score the
champion) and by serving code; whoever can write the bucket could plant a file. Pickle (joblib) runs
whatever the file says while loading, so it is never loaded here. skops stores a schema of the objects
instead and only builds types a caller trusts; :func:`untrusted_types` lists what a file would build
before anything is built.

A type is trusted when skops trusts it by default (builtins, numpy arrays, most scikit-learn
estimators), or when it is a *class* under an estimator-allowlist prefix (``sklearn`` and what the
administrator adds; see :mod:`.fit`), or one of a few numpy types that carry no code. Functions are
never trusted, even under an allowed prefix, because an estimator may call a stored function (a
FunctionTransformer's ``func``) when it predicts. Anything else is refused with UntrustedModel naming
the types.

Limits: trust is decided by type names; a class under an allowed prefix is trusted whole, as the
estimator allowlist already trusts its code when training.
"""

from __future__ import annotations

import importlib
import zipfile
from functools import cache
from typing import Any, Final

import skops.io as sio

from retrain_operator.trainer.errors import RegistryError

__all__ = ["dump_model", "load_model", "untrusted_types"]

# numpy types skops reports as untrusted that hold data only.
_SAFE_NUMPY: Final = frozenset({"numpy.dtype"})
_SHOWN: Final = 8


def dump_model(model: object) -> bytes:
    """The skops bytes of ``model`` (deflate-compressed)."""
    return bytes(sio.dumps(model, compression=zipfile.ZIP_DEFLATED))


def untrusted_types(data: bytes, *, allowlist: tuple[str, ...]) -> list[str]:
    """The types in a skops file that we do not trust; empty when it is safe to load."""
    try:
        named = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a corrupt or foreign file; skops raises zipfile, JSON and key errors
        raise RegistryError("UntrustedModel", f"not a readable skops file: {type(exc).__name__}: {exc}") from None
    return [name for name in named if not _trusted(name, allowlist)]


def load_model(data: bytes, *, allowlist: tuple[str, ...], source: str) -> Any:
    """Build the model in a skops file, refusing (UntrustedModel) any file that names an untrusted type."""
    refused = untrusted_types(data, allowlist=allowlist)
    if refused:
        shown = ", ".join(refused[:_SHOWN]) + (f" and {len(refused) - _SHOWN} more" if len(refused) > _SHOWN else "")
        raise RegistryError(
            "UntrustedModel",
            f"{source} contains types that are not trusted and was not loaded: {shown}; only scikit-learn classes, "
            "classes under the estimator allowlist and plain data are loaded",
        )
    trusted = sio.get_untrusted_types(data=data)
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:  # skops and the classes it builds raise many types for damaged files
        raise RegistryError("UntrustedModel", f"{source} could not be loaded: {type(exc).__name__}: {exc}") from None


def _trusted(name: str, allowlist: tuple[str, ...]) -> bool:
    if name in _SAFE_NUMPY:
        return True
    # Private module segments are normal inside libraries (sklearn.tree._tree.Tree), so only the class
    # name itself must be public and the object a class.
    module, _, attribute = name.rpartition(".")
    if not module or attribute.startswith("_") or not any(module == p or module.startswith(f"{p}.") for p in allowlist):
        return False
    return _is_class(module, attribute)


@cache
def _is_class(module: str, attribute: str) -> bool:
    try:
        found = getattr(importlib.import_module(module), attribute, None)
    except ImportError:
        return False
    return isinstance(found, type)
