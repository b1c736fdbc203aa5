"""core.model.compiled_trees scores the training pipeline bitwise like scikit-learn, and refuses what it cannot copy."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.model.compiled_trees import CompiledModel, compile_pipeline
from core.model.registry import LoadedModel
from core.model.training import HYPERPARAMETERS, _pipeline

FEATURES = 6
REFS = tuple(f"view:f{i}" for i in range(FEATURES))


def _data(rows: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Features with NaNs (column 0 never missing: no indicator; column 5 always: constant fill) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)) * np.array([1.0, 10.0, 0.1, 1e4, 1.0, 1.0])
    x[:, 1:][rng.random((rows, FEATURES - 1)) < 0.25] = np.nan
    x[:, 5] = np.nan
    logit = (
        np.nan_to_num(x[:, 0])
        + 0.1 * np.nan_to_num(x[:, 1])
        - np.isnan(x[:, 2])
        + 1e-4 * np.nan_to_num(x[:, 3])
    )
    y = (logit + rng.normal(size=rows) > 0.5).astype(np.int64)
    return x, y


@pytest.fixture(scope="module")
def fitted() -> Any:
    """The pipeline core.model.training builds, fitted (with early stopping) on synthetic data with NaNs."""
    x, y = _data(6_000, seed=1)
    return _pipeline(dict(HYPERPARAMETERS)).fit(x, y)


@pytest.fixture(scope="module")
def compiled(fitted: Any) -> CompiledModel:
    model = compile_pipeline(fitted)
    assert model is not None
    return model


def _expected(estimator: Any, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    with np.errstate(over="ignore", invalid="ignore"):  # sklearn's finiteness check sums huge values
        proba: npt.NDArray[np.float64] = estimator.predict_proba(x)[:, list(estimator.classes_).index(1)]
    return proba


def _assert_same(estimator: Any, model: CompiledModel, x: npt.NDArray[np.float64]) -> None:
    expected = _expected(estimator, x)
    actual = model.predict_proba1(x)
    assert actual.dtype == np.float64
    assert actual.shape == (x.shape[0],)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(actual, expected)  # in fact bitwise: same comparisons, same sum order


def _threshold_rows(compiled: CompiledModel, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Rows whose values sit exactly on, and one ulp either side of, the trees' split thresholds."""
    splits = compiled.feature[compiled.children[0::2] != np.arange(compiled.feature.shape[0])]
    thresholds = compiled.threshold[compiled.children[0::2] != np.arange(compiled.feature.shape[0])]
    raw = splits < FEATURES  # splits on indicator columns are covered by the NaN rows
    rows = []
    for nudge in (0.0, -np.inf, np.inf):
        for column, threshold in zip(splits[raw], thresholds[raw], strict=True):
            row = rng.normal(size=FEATURES)
            row[column] = threshold if nudge == 0.0 else np.nextafter(threshold, nudge)
            rows.append(row)
    return np.array(rows)


def test_thousands_of_rows_with_nans_extremes_and_thresholds(fitted: Any, compiled: CompiledModel) -> None:
    """Random rows, NaNs, huge and tiny magnitudes, values on thresholds, all-NaN rows: identical scores."""
    rng = np.random.default_rng(7)
    random_rows, _ = _data(5_000, seed=2)
    scaled = rng.normal(size=(2_000, FEATURES)) * 10.0 ** rng.integers(-300, 300, size=(2_000, FEATURES))
    scaled[rng.random(scaled.shape) < 0.3] = np.nan
    edges = np.array([np.finfo(np.float64).max, -np.finfo(np.float64).max, 5e-324, -5e-324, 0.0, -0.0])
    extreme = rng.choice(edges, size=(500, FEATURES))
    on_thresholds = _threshold_rows(compiled, rng)
    assert on_thresholds.shape[0] > 100
    all_nan = np.full((3, FEATURES), np.nan)
    x = np.vstack([random_rows, scaled, extreme, on_thresholds, all_nan])
    assert x.shape[0] > 7_500
    _assert_same(fitted, compiled, x)


def test_single_rows_and_small_batches(fitted: Any, compiled: CompiledModel) -> None:
    """The live API's shapes: one row (each kind) and a handful."""
    x, _ = _data(40, seed=3)
    for row in x:
        _assert_same(fitted, compiled, row[None, :])
    _assert_same(fitted, compiled, np.full((1, FEATURES), np.nan))
    _assert_same(fitted, compiled, x[:7])
    assert compiled.predict_proba1(np.empty((0, FEATURES))).shape == (0,)


def test_infinities_and_wrong_shapes_are_refused_like_sklearn(fitted: Any, compiled: CompiledModel) -> None:
    row = np.zeros((1, FEATURES))
    row[0, 2] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        fitted.predict_proba(row)
    with pytest.raises(ValueError, match="infinity"):
        compiled.predict_proba1(row)
    with pytest.raises(ValueError, match="features"):
        compiled.predict_proba1(np.zeros((1, FEATURES + 1)))


def test_what_was_compiled(fitted: Any, compiled: CompiledModel) -> None:
    """Every tree, the imputer's fills, indicators only for columns that had NaNs when fitted."""
    booster = fitted[-1]
    assert compiled.n_trees == booster.n_iter_ > 10
    np.testing.assert_array_equal(compiled.fill, fitted[0].statistics_)
    assert compiled.fill[5] == 0.0  # keep_empty_features: an all-NaN column is filled with 0
    assert list(compiled.indicator_features) == [1, 2, 3, 4, 5]
    assert compiled.positive_column == 1


def test_other_class_labels_pick_the_right_column() -> None:
    """Labels {1, 2}: class 1 is classes_[0], so its probability is 1 - expit(raw), as sklearn computes it."""
    x, y = _data(3_000, seed=4)
    estimator = _pipeline(dict(HYPERPARAMETERS)).fit(x, y + 1)
    model = compile_pipeline(estimator)
    assert model is not None
    assert model.positive_column == 0
    _assert_same(estimator, model, _data(1_000, seed=5)[0])


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: LogisticRegression(max_iter=1_000), id="logistic-regression"),
        pytest.param(lambda: HistGradientBoostingClassifier(max_iter=5), id="bare-booster"),
        pytest.param(
            lambda: make_pipeline(
                SimpleImputer(), StandardScaler(), HistGradientBoostingClassifier(max_iter=5)
            ),
            id="extra-step",
        ),
        pytest.param(
            lambda: make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1_000)),
            id="imputer-then-logistic",
        ),
    ],
)
def test_other_estimators_do_not_compile(build: Any) -> None:
    x, y = _data(500, seed=6)
    estimator = build().fit(np.nan_to_num(x), y)
    assert compile_pipeline(estimator) is None


def test_unfitted_categorical_and_multiclass_pipelines_do_not_compile() -> None:
    assert compile_pipeline(_pipeline(dict(HYPERPARAMETERS))) is None
    x, y = _data(1_500, seed=8)
    categorical = np.abs(np.round(np.nan_to_num(x[:, :1]))) % 4
    with_category = np.hstack([categorical, x[:, 1:]])
    estimator = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        HistGradientBoostingClassifier(categorical_features=[0], max_iter=20),
    ).fit(with_category, y)
    assert compile_pipeline(estimator) is None
    multiclass = _pipeline({**HYPERPARAMETERS, "early_stopping": False, "max_iter": 5}).fit(
        x, y + (x[:, 0] > 1)
    )
    assert compile_pipeline(multiclass) is None
    assert compile_pipeline(object()) is None


def _loaded(estimator: Any, compiled: CompiledModel | None) -> LoadedModel:
    return LoadedModel(
        version="v1",
        model_name="m",
        feature_refs=REFS,
        estimator=estimator,
        sha256="",
        metrics={},
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        compiled=compiled,
    )


def test_loaded_model_scores_the_same_with_and_without_the_compiled_path(
    fitted: Any, compiled: CompiledModel
) -> None:
    """predict_scores takes the compiled path when present; matrices and frames score as predict_proba does."""
    fast, slow = _loaded(fitted, compiled), _loaded(fitted, None)
    x, _ = _data(1_000, seed=9)
    expected = _expected(fitted, x)
    np.testing.assert_array_equal(fast.predict_scores(x), expected)
    np.testing.assert_array_equal(slow.predict_scores(x), expected)
    frame = pd.DataFrame(x, columns=list(fast.feature_names)).iloc[:, ::-1].assign(extra=1.0)
    frame["f3"] = pd.array([None if np.isnan(v) else v for v in x[:, 3]], dtype=object)  # nulls as None
    np.testing.assert_array_equal(fast.predict_scores(frame), expected)
    np.testing.assert_array_equal(fast.predict_scores(x[:1]), expected[:1])
    assert fast.predict_scores(x[:0]).shape == (0,)
    assert dataclasses.replace(fast, compiled=None).predict_scores(x[:3]).tolist() == expected[:3].tolist()
