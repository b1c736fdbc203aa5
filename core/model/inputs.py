"""A model's inputs against its feature service, and rows handed to the model the way it was fitted.

A model fitted on a DataFrame knows its column names (`feature_names_in_`): each must be a feature of the
service, and the model's feature refs follow the model's own column order. A model fitted on a matrix knows
only how many columns it takes (`n_features_in_`), which must equal the service's feature count (the
service's order is then the model's). At scoring time a model with names gets a DataFrame with exactly
those columns (no "X does not have valid feature names" warning per request, and a ColumnTransformer
selecting by name works). Building that DataFrame costs ~0.9 ms per one-row call (536 us -> 1,396 us for a
13-feature LogisticRegression pipeline), so `unnamed_twin` makes, once per load, a copy without the names
that takes the matrix as is, kept only when it scores a probe exactly as the named model scores the frame.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import InvalidModelError

__all__ = [
    "check_input_names",
    "fitted_feature_names",
    "model_feature_refs",
    "model_inputs",
    "unnamed_twin",
]


def _feature_name(ref: str) -> str:
    return ref.rsplit(":", 1)[-1]


def fitted_feature_names(estimator: Any) -> tuple[str, ...] | None:
    """The column names the estimator was fitted with, or None when it was fitted on a matrix."""
    try:
        names = estimator.feature_names_in_
    except (
        AttributeError
    ):  # Pipeline.feature_names_in_ is a property that raises when its first step lacks it
        return None
    return tuple(str(name) for name in names)


def _listing(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def model_feature_refs(
    estimator: Any, service_refs: Sequence[str], *, feature_service: str
) -> tuple[str, ...]:
    """The `view:feature` refs the estimator reads, in its column order; InvalidModelError (one line) on mismatch.

    With `feature_names_in_`: every name must be a feature of the service (names the service holds twice are
    ambiguous). Without: `n_features_in_` must equal the service's feature count, and the order is the service's.
    """
    names = fitted_feature_names(estimator)
    if names is None:
        count = getattr(estimator, "n_features_in_", None)
        if count is not None and int(count) != len(service_refs):
            raise InvalidModelError(
                f"the model takes {int(count)} input columns but feature service {feature_service!r} has "
                f"{len(service_refs)} features ({_listing([_feature_name(r) for r in service_refs])})"
            )
        return tuple(service_refs)
    by_name: dict[str, list[str]] = {}
    for ref in service_refs:
        by_name.setdefault(_feature_name(ref), []).append(ref)
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InvalidModelError(
            f"the model reads columns that feature service {feature_service!r} does not have: {_listing(unknown)} "
            f"(it has {_listing(list(by_name))})"
        )
    ambiguous = [name for name in names if len(by_name[name]) > 1]
    if ambiguous:
        raise InvalidModelError(
            f"feature service {feature_service!r} holds {_listing(ambiguous)} in several views: "
            "the model's column names cannot tell which"
        )
    if len(set(names)) != len(names):
        raise InvalidModelError(f"the model names a column twice: {_listing(list(names))}")
    return tuple(by_name[name][0] for name in names)


def check_input_names(estimator: Any, feature_refs: Sequence[str]) -> None:
    """InvalidModelError unless the estimator's inputs are `feature_refs`' names in that order (or count)."""
    expected = tuple(_feature_name(ref) for ref in feature_refs)
    names = fitted_feature_names(estimator)
    if names is not None and names != expected:
        raise InvalidModelError(
            f"the model's columns ({_listing(list(names))}) are not its feature refs' names in order "
            f"({_listing(list(expected))})"
        )
    count = getattr(estimator, "n_features_in_", None)
    if names is None and count is not None and int(count) != len(expected):
        raise InvalidModelError(
            f"the model takes {int(count)} input columns, not {len(expected)} feature refs"
        )


def model_inputs(matrix: npt.NDArray[Any], names: tuple[str, ...] | None) -> Any:
    """What the estimator is given: the matrix itself, or (fitted with names) a DataFrame with those columns."""
    if names is None:
        return matrix
    import pandas as pd  # only models fitted on a DataFrame pay for pandas

    if matrix.dtype == np.float64:
        return pd.DataFrame(matrix, columns=list(names), copy=False)
    return pd.DataFrame({name: matrix[:, index] for index, name in enumerate(names)})


def _strip_names(obj: Any, seen: set[int]) -> bool:
    """Delete `feature_names_in_` from every fitted estimator inside `obj`; False if one selects columns by name."""
    from sklearn.base import BaseEstimator

    if id(obj) in seen:
        return True
    seen.add(id(obj))
    if isinstance(obj, list | tuple):
        return all(_strip_names(item, seen) for item in obj)
    if isinstance(obj, dict):
        return all(_strip_names(item, seen) for item in obj.values())
    if not isinstance(obj, BaseEstimator):
        return True
    if type(obj).__name__ == "ColumnTransformer":
        return False  # may select columns by name: it needs the DataFrame
    attributes = vars(obj)
    attributes.pop("feature_names_in_", None)
    return all(_strip_names(item, seen) for item in list(attributes.values()))


def unnamed_twin(
    estimator: Any, score: Callable[[Any, Any], npt.NDArray[np.float64]], n_features: int
) -> Any | None:
    """A copy of a model fitted with names that takes a plain matrix, or None (use the DataFrame).

    Kept only if, on a probe of a few rows, `score(copy, matrix)` equals `score(estimator, frame)` to 1e-12
    and neither emits a warning; anything unexpected (a by-name column selector, a failure) gives None.
    """
    names = fitted_feature_names(estimator)
    if names is None or len(names) != n_features:
        return None
    twin = copy.deepcopy(estimator)
    if not _strip_names(twin, set()):
        return None
    probe = np.repeat(np.array([[0.0], [1.0], [-1.0], [0.5]]), n_features, axis=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            expected = score(estimator, model_inputs(probe, names))
            actual = score(twin, probe)
    except Exception:  # noqa: BLE001 - any failure of the probe means: keep scoring with names
        return None
    if caught or not np.allclose(actual, expected, rtol=0.0, atol=1e-12):
        return None
    return twin
