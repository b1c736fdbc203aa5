"""Train a model from the offline store: labels + Feast point-in-time features -> evaluated sklearn pipeline.

Labels come from any table or query (`core.model.labels`). Feast joins each label to the newest row per
feature view at or before the label's time (within the view's TTL): nothing from the label's future leaks
in. The newest `holdout_fraction` of label times is held out: ROC AUC, PR AUC, Brier score and a
calibration table for a classifier (the positive class is the greater of the two label values), MAE, RMSE
and R2 for a regressor. With `refit_on_all` (default) the estimator is then refit on every label with the
iteration count early stopping chose, so the newest labels shape it too: the metrics, from the model
trained without the holdout, are a slightly pessimistic estimate. Inputs: feature columns, service order.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
from sqlalchemy import Engine

from core.errors import ConfigurationError, TrainingError
from core.features.feast_repo import feature_service_refs
from core.model.labels import LABEL_ALIAS, TIMESTAMP, describe_labels, entity_rows_query, fit_targets
from core.model.loaded import feature_names
from core.model.metrics import calibration_table, evaluate_regression, evaluate_scores
from core.model.tasks import Task, parse_task
from core.settings import Settings

__all__ = [
    "HYPERPARAMETERS",
    "LABEL",
    "TrainingResult",
    "calibration_table",
    "evaluate_scores",
    "service_join_keys",
    "train_model",
    "training_frame",
]

LABEL = "label"

Progress = Callable[[str], None]

# Small regularized trees (best of a few settings measured on 3k x 6 days to 100k x 30 days of demo data).
HYPERPARAMETERS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_leaf_nodes": 8,
    "min_samples_leaf": 50,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.1,
    "n_iter_no_change": 10,
}


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """A fitted estimator and everything the registry records about it."""

    estimator: Any
    feature_service: str
    feature_refs: tuple[str, ...]
    training_start: datetime
    training_end: datetime
    metrics: dict[str, Any]
    params: dict[str, Any]
    task: Task = "classification"


def service_join_keys(store: Any, feature_service: str) -> list[str]:
    """The entity join keys the feature service's views need, in first-seen order."""
    service = store.get_feature_service(feature_service)
    keys = (
        projection.join_key_map.get(key, key)
        for projection in service.feature_view_projections
        for key in store.get_feature_view(projection.name).join_keys
    )
    return list(dict.fromkeys(keys))


@contextmanager
def _entity_query_embedded(store: Any) -> Iterator[None]:
    """Feast's PostgreSQL store inlines a SQL entity_df as a CTE instead of copying it to a table."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import EntitySelectMode

    offline = store.config.offline_store
    previous = offline.entity_select_mode
    offline.entity_select_mode = EntitySelectMode.embed_query
    try:
        yield
    finally:
        offline.entity_select_mode = previous


def training_frame(
    store: Any,
    *,
    engine: Engine,
    feature_service: str,
    label_table: str,
    label_column: str = LABEL,
    timestamp_column: str = TIMESTAMP,
) -> pd.DataFrame:
    """Every label of `label_table` (a table or a query) with the service's features joined point-in-time by Feast.

    Columns: join keys, `event_timestamp` (aware UTC), `label` (as the source holds it), the feature names;
    oldest first. Feast writes the SQL; Tandem runs it without nested loops, which PostgreSQL picks on
    misestimated range joins and which are quadratic (30,000 labels x 2 days: 250 s as Feast runs it, 0.4 s).
    """
    refs = feature_service_refs(store, feature_service)  # NotFoundError for an unknown service
    keys = service_join_keys(store, feature_service)
    with engine.connect() as connection:
        dbapi = connection.connection.driver_connection
        if not isinstance(dbapi, psycopg.Connection):
            raise TypeError(f"training needs a psycopg 3 engine, got {type(dbapi).__name__}")
        with dbapi.cursor() as cursor:
            entity_rows = entity_rows_query(
                cursor,
                labels=label_table,
                join_keys=keys,
                label_column=label_column,
                timestamp_column=timestamp_column,
            )
            with _entity_query_embedded(store), warnings.catch_warnings():
                # Feast reads the entity query's schema with pandas on a psycopg connection: pandas warns.
                warnings.filterwarnings("ignore", "pandas only supports SQLAlchemy", UserWarning)
                job = store.get_historical_features(
                    entity_df=entity_rows, features=store.get_feature_service(feature_service)
                )
                query = job.to_sql()
            cursor.execute("SET LOCAL enable_nestloop = off")
            rows = cursor.execute(query).fetchall()
            names = [column.name for column in cursor.description or ()]
        dbapi.rollback()  # read-only; ends the transaction SET LOCAL applied to
    frame = pd.DataFrame.from_records(rows, columns=names).rename(columns={LABEL_ALIAS: LABEL})
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    ordered = [*keys, TIMESTAMP, LABEL, *feature_names(refs)]
    return frame.loc[:, ordered].sort_values([TIMESTAMP, *keys], kind="stable").reset_index(drop=True)


def _pipeline(hyper: dict[str, Any], task: Task = "classification") -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    booster = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), booster(**hyper)
    )


def _split(frame: pd.DataFrame, holdout_fraction: float) -> tuple[npt.NDArray[np.bool_], pd.Timestamp]:
    """Mask of training rows (before the cutoff) and the cutoff: the first timestamp of the newest fraction."""
    first_holdout = len(frame) - max(1, math.ceil(len(frame) * holdout_fraction))
    cutoff = frame[TIMESTAMP].iloc[first_holdout]
    train = (frame[TIMESTAMP] < cutoff).to_numpy()
    if not train.any():
        raise TrainingError(f"no label is older than the holdout's first, {cutoff}: nothing to train on")
    return train, cutoff


def _holdout_metrics(
    model: Any, task: Task, x: npt.NDArray[np.float64], y: npt.NDArray[Any]
) -> dict[str, Any]:
    if task == "regression":
        return evaluate_regression(y.astype(np.float64), np.asarray(model.predict(x), dtype=np.float64))
    scores = np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
    return evaluate_scores(y, scores)


def _stage(progress: Progress | None, timings: dict[str, float], name: str, started: float) -> float:
    now = time.perf_counter()
    timings[name] = round(now - started, 3)
    if progress is not None:
        progress(name)
    return now


def train_model(
    store: Any,
    settings: Settings,
    *,
    engine: Engine,
    label_table: str | None = None,
    feature_service: str | None = None,
    holdout_fraction: float = 0.2,
    refit_on_all: bool = True,
    random_state: int = 0,
    max_iter: int = 500,
    progress: Progress | None = None,
    label_column: str = LABEL,
    timestamp_column: str = TIMESTAMP,
    task: Task = "classification",
) -> TrainingResult:
    """Train on `label_table` (a table or a query) with the features of `feature_service` (defaults: the
    settings' `labels` and `feature_service`; ConfigurationError naming the setting when neither is given).

    See the module doc. `progress(stage)` is called after each stage: features, fit, evaluate, refit.
    """
    import sklearn

    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    task = parse_task(task)
    service = feature_service or settings.feature_service
    if service is None:
        raise ConfigurationError(
            "name the feature service to train on: --feature-service or TANDEM_FEATURE_SERVICE"
        )
    label_table = label_table or settings.labels
    if label_table is None:
        raise ConfigurationError("name the labels: --labels TABLE_OR_QUERY or TANDEM_LABELS")
    refs = feature_service_refs(store, service)  # NotFoundError for an unknown service
    names = list(feature_names(refs))
    source = describe_labels(label_table)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    frame = training_frame(
        store,
        engine=engine,
        feature_service=service,
        label_table=label_table,
        label_column=label_column,
        timestamp_column=timestamp_column,
    )
    mark = _stage(progress, timings, "features", started)

    x = frame.loc[:, names].to_numpy(dtype=np.float64, na_value=np.nan)
    y, label_params = fit_targets(frame[LABEL], task=task, source=source)
    train, cutoff = _split(frame, holdout_fraction)
    if task == "classification" and y[train].min() == y[train].max():
        raise TrainingError(
            f"every label of {source} before {cutoff} is the same: a classifier needs both classes"
        )
    hyper: dict[str, Any] = {**HYPERPARAMETERS, "max_iter": max_iter, "random_state": random_state}
    holdout_model = _pipeline(hyper, task).fit(x[train], y[train])
    mark = _stage(progress, timings, "fit", mark)
    metrics = _holdout_metrics(holdout_model, task, x[~train], y[~train])
    mark = _stage(progress, timings, "evaluate", mark)

    iterations = int(holdout_model[-1].n_iter_)
    estimator = holdout_model
    if refit_on_all:
        estimator = _pipeline({**hyper, "max_iter": iterations, "early_stopping": False}, task).fit(x, y)
        _stage(progress, timings, "refit", mark)
    timings["total"] = round(time.perf_counter() - started, 3)
    missing = frame.loc[:, names].isna()
    metrics.update(
        rows=len(frame),
        train_rows=int(train.sum()),
        holdout_rows=int((~train).sum()),
        rows_missing_any_feature=int(missing.any(axis=1).sum()),
        rows_missing_all_features=int(missing.all(axis=1).sum()),
        holdout_start=cutoff.isoformat(),
        seconds=timings,
    )
    if task == "classification":
        metrics.update(
            positives=int(y.sum()),
            train_positives=int(y[train].sum()),
            holdout_positives=int(y[~train].sum()),
        )
    params = {
        "estimator": f"SimpleImputer(median, indicators) + {type(estimator[-1]).__name__}",
        "hyperparameters": hyper,
        "iterations": iterations,
        "holdout_fraction": holdout_fraction,
        "refit_on_all": refit_on_all,
        "labels": label_table,
        "label_column": label_column,
        "timestamp_column": timestamp_column,
        "sklearn_version": sklearn.__version__,
        **label_params,
    }
    return TrainingResult(
        estimator=estimator,
        feature_service=service,
        feature_refs=tuple(refs),
        training_start=frame[TIMESTAMP].iloc[0].to_pydatetime(),
        training_end=frame[TIMESTAMP].iloc[-1].to_pydatetime(),
        metrics=metrics,
        params=params,
        task=task,
    )
