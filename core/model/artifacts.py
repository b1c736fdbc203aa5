"""Read a model trained elsewhere from a file: joblib (a pickle: trust the file) or skops (no code execution).

`.skops` files are loaded by skops, which rebuilds only types it trusts; a file naming any other type is
refused in one line that names them, unless the caller trusts those names explicitly. Tandem adds two
data-only types skops leaves out that scikit-learn's own estimators hold (`ALSO_TRUSTED`): a numpy dtype
(SimpleImputer's fill type) and the node arrays of a HistGradientBoosting tree. Any other suffix
(`.joblib`, `.pkl`, `.pickle`) is read by joblib, which unpickles: only load files you would run as code.
Once registered, a model is stored as a pickle either way, signed when `TANDEM_MODEL_SIGNING_KEY` is set
(core/model/signing.py, docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import InvalidModelError, first_line

__all__ = ["ALSO_TRUSTED", "JOBLIB_SUFFIXES", "SKOPS_SUFFIX", "read_model_file"]

ALSO_TRUSTED = frozenset({"numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})
SKOPS_SUFFIX = ".skops"
JOBLIB_SUFFIXES = (".joblib", ".pkl", ".pickle")


def _read_skops(path: Path, trusted: Sequence[str]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001 - any failure to parse the file is one line for the user
        raise InvalidModelError(f"{path} is not a readable skops file: {first_line(exc)}") from None
    refused = sorted(set(untrusted) - ALSO_TRUSTED - set(trusted))
    if refused:
        raise InvalidModelError(
            f"{path} holds types skops does not trust: {', '.join(refused)} "
            "(pass --trust TYPE for each one you trust)"
        )
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:  # noqa: BLE001 - as above
        raise InvalidModelError(f"cannot load {path} with skops: {first_line(exc)}") from None


def _read_joblib(path: Path) -> Any:
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - a broken or foreign file is one line for the user
        raise InvalidModelError(f"cannot load {path} with joblib: {first_line(exc)}") from None


def read_model_file(path: Path, *, trusted: Sequence[str] = ()) -> Any:
    """The object saved in `path`, chosen by suffix: skops for `.skops`, joblib for the pickle suffixes."""
    if not path.is_file():
        raise InvalidModelError(f"no model file at {path}")
    suffix = path.suffix.lower()
    if suffix == SKOPS_SUFFIX:
        return _read_skops(path, trusted)
    if suffix in JOBLIB_SUFFIXES:
        return _read_joblib(path)
    raise InvalidModelError(
        f"{path}: unknown model file suffix {suffix or '(none)'!r}: "
        f"use {SKOPS_SUFFIX} (skops) or {', '.join(JOBLIB_SUFFIXES)} (joblib)"
    )
