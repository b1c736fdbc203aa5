"""LoadedModel.predict_scores for models outside the compiled trees: the task decides the score, inputs reach
the model under their names without a warning per call, and one row scores as it does inside a batch."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.model.loaded import LoadedModel
from core.model.tasks import Task

NAMES = ("age", "limit", "count_24h", "amount_24h")
REFS = tuple(f"view:{name}" for name in NAMES)


def _data(rows: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NAMES))) * [10.0, 1_000.0, 3.0, 250.0]
    x[rng.random(x.shape) < 0.05] = np.nan
    logit = np.nan_to_num(x[:, 0] / 10 - x[:, 3] / 250)
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return x, y


def _loaded(estimator: Any, task: Task = "classification") -> LoadedModel:
    return LoadedModel(
        version="v1",
        model_name="m",
        feature_refs=REFS,
        estimator=estimator,
        sha256="0" * 64,
        metrics={},
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        task=task,
    )


def _lr_pipeline() -> Any:
    return make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression())


def _scores_without_warnings(model: LoadedModel, features: Any) -> npt.NDArray[np.float64]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = model.predict_scores(features)
    assert [str(w.message) for w in caught] == []
    return scores


@pytest.mark.parametrize("fitted_on", ["frame", "matrix"])
def test_a_matrix_or_a_frame_scores_without_a_feature_names_warning(fitted_on: str) -> None:
    """Fitted on a DataFrame or a matrix: scoring a matrix (the API) or a frame emits no warning at all."""
    x, y = _data(2_000, seed=1)
    frame = pd.DataFrame(x, columns=list(NAMES))
    estimator = _lr_pipeline().fit(frame if fitted_on == "frame" else x, y)
    model = _loaded(estimator)
    expected = estimator.predict_proba(frame if fitted_on == "frame" else x)[:, 1]
    np.testing.assert_array_equal(_scores_without_warnings(model, x), expected)
    np.testing.assert_array_equal(_scores_without_warnings(model, x[:1]), expected[:1])
    from_frame = _scores_without_warnings(model, frame.iloc[:, ::-1])  # read by name
    np.testing.assert_allclose(from_frame, expected, rtol=0, atol=1e-12)


def test_a_column_transformer_selecting_by_name_gets_its_columns_by_name() -> None:
    """A pipeline that selects columns by name (it cannot take a matrix) scores matrices in feature order."""
    x, y = _data(1_000, seed=2)
    frame = pd.DataFrame(x, columns=list(NAMES))
    selector = make_column_transformer((SimpleImputer(), ["amount_24h", "age"]), remainder="drop")
    estimator = make_pipeline(selector, LogisticRegression()).fit(frame, y)
    expected = estimator.predict_proba(frame)[:, 1]
    np.testing.assert_array_equal(_scores_without_warnings(_loaded(estimator), x), expected)


@pytest.mark.parametrize(
    ("task", "build"),
    [
        pytest.param("classification", _lr_pipeline, id="logistic-regression-pipeline"),
        pytest.param(
            "regression",
            lambda: HistGradientBoostingRegressor(max_iter=50, random_state=0),
            id="hist-gradient-boosting-regressor",
        ),
        pytest.param("regression", lambda: make_pipeline(SimpleImputer(), Ridge()), id="ridge-pipeline"),
    ],
)
def test_one_row_scores_as_it_does_inside_a_big_batch(task: Task, build: Any) -> None:
    """Live (one row) and batch (100,000 rows) agree to 1e-12 for every row checked: parity holds."""
    x, y = _data(5_000, seed=3)
    target = y if task == "classification" else np.nan_to_num(x[:, 0]) * 2.0 + y
    frame = pd.DataFrame(x, columns=list(NAMES))
    model = _loaded(build().fit(frame, target), task)
    batch = np.tile(_data(1_000, seed=4)[0], (100, 1))
    batch_scores = model.predict_scores(batch)
    assert batch_scores.dtype == np.float64
    assert batch_scores.shape == (100_000,)
    for index in range(0, 1_000, 37):
        live = model.predict_scores(batch[index : index + 1])
        np.testing.assert_allclose(live, batch_scores[index : index + 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(live, batch_scores[index + 50_000], rtol=0, atol=1e-12)


def test_the_task_decides_what_the_score_is() -> None:
    """Regression scores are predict()'s values; classification scores the greater class's probability."""
    x, y = _data(1_000, seed=5)
    filled = np.nan_to_num(x)
    regressor = Ridge().fit(filled, filled[:, 1] * 0.5)
    np.testing.assert_array_equal(
        _loaded(regressor, "regression").predict_scores(filled), regressor.predict(filled)
    )
    labels = np.where(y == 1, "yes", "no")
    classifier = LogisticRegression().fit(filled, labels)
    assert list(classifier.classes_) == ["no", "yes"]
    np.testing.assert_array_equal(
        _loaded(classifier).predict_scores(filled), classifier.predict_proba(filled)[:, 1]
    )


def test_a_prepared_model_scores_matrices_through_an_unnamed_twin() -> None:
    """Fitted on a DataFrame: `prepared()` keeps a name-free twin that scores matrices like the named model
    scores frames (1e-12), without warnings; the original keeps its names. A by-name selector gets no twin."""
    x, y = _data(2_000, seed=6)
    frame = pd.DataFrame(x, columns=list(NAMES))
    estimator = _lr_pipeline().fit(frame, y)
    model = _loaded(estimator).prepared()
    assert model.unnamed is not None
    assert not hasattr(model.unnamed, "feature_names_in_")
    assert list(estimator.feature_names_in_) == list(NAMES)
    expected = estimator.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(_scores_without_warnings(model, x), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(_scores_without_warnings(model, x[:1]), expected[:1], rtol=0, atol=1e-12)
    assert model.prepared() is model

    selector = make_column_transformer((SimpleImputer(), ["amount_24h", "age"]), remainder="drop")
    by_name = _loaded(make_pipeline(selector, LogisticRegression()).fit(frame, y)).prepared()
    assert by_name.unnamed is None
    plain = _loaded(_lr_pipeline().fit(x, y))
    assert plain.prepared() is plain  # fitted on a matrix: nothing to strip
