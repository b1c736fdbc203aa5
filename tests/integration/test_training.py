"""Training and the model registry on real stores: point-in-time training sets, a model that beats chance on
a time-based holdout, hash-checked artifacts, promotion, and the `tandem train` / `tandem models` commands."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import numpy as np
import pandas as pd
import psycopg
import pytest
from click.testing import CliRunner
from rich.console import Console
from sqlalchemy import Engine, create_engine, delete, func, select, update
from sqlalchemy.orm import Session

from core.errors import NotFoundError, TamperedArtifactError, TrainingError
from core.features.feast_repo import apply_feature_repo, feature_service_refs, open_feature_store
from core.model.lifecycle import register_trained
from core.model.registry import list_versions, load_model, promote, register_model
from core.model.training import TrainingResult, train_model, training_frame
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.commands.models import models_group, train_cmd
from tandem.context import CliContext
from tandem.demo.data import LABEL_TABLE, TXN_TABLE, seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_LABELS

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
CUSTOMERS = 3_000
VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}(-\d+)?$")
POISON = 1e12


@dataclass(frozen=True)
class Trained:
    """The module's Feast store and one training run on its freshly seeded data."""

    store: Any
    result: TrainingResult


@pytest.fixture(scope="module")
def trained(settings: Settings, stores: Stores, engine: Engine) -> Trained:
    """Repo applied, 3,000 customers x 6 days reseeded (whatever other modules left), one model trained."""
    apply_feature_repo(settings, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=6, seed=23, end=END)
    store = open_feature_store(settings, stores)
    return Trained(store=store, result=train_model(store, settings, engine=engine))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction is rolled back after the test (registry functions never commit)."""
    with Session(engine) as session:
        yield session
        session.rollback()


def _register(session: Session, result: TrainingResult, *, model_name: str) -> Any:
    return register_model(
        session,
        model_name=model_name,
        estimator=result.estimator,
        feature_service=result.feature_service,
        feature_refs=result.feature_refs,
        training_start=result.training_start,
        training_end=result.training_end,
        metrics=result.metrics,
        params=result.params,
    )


def _model_name() -> str:
    return f"test_model_{uuid.uuid4().hex[:8]}"


def test_model_beats_chance_on_the_time_based_holdout(trained: Trained, settings: Settings) -> None:
    """ROC AUC > 0.7 on the newest 20% of labels; counts, window, calibration and input order are consistent."""
    result, metrics = trained.result, trained.result.metrics
    assert metrics["roc_auc"] > 0.7
    assert 0.0 < metrics["pr_auc"] <= 1.0
    assert 0.0 <= metrics["brier"] < 0.1
    assert metrics["rows"] == CUSTOMERS == metrics["train_rows"] + metrics["holdout_rows"]
    assert metrics["holdout_rows"] >= 0.2 * CUSTOMERS
    assert metrics["positives"] == metrics["train_positives"] + metrics["holdout_positives"]
    assert result.training_start < datetime.fromisoformat(metrics["holdout_start"]) <= result.training_end
    assert result.training_end.tzinfo is not None
    assert len(metrics["calibration"]) == 10
    assert sum(row["count"] for row in metrics["calibration"]) == metrics["holdout_rows"]
    assert list(result.feature_refs) == feature_service_refs(trained.store, DEMO_FEATURE_SERVICE)


def test_loaded_model_scores_like_the_trained_estimator(
    trained: Trained, session: Session, engine: Engine
) -> None:
    """Register + promote, then load the promoted version: same hash, same scores as the in-memory estimator."""
    name = _model_name()
    info = _register(session, trained.result, model_name=name)
    assert VERSION.match(info.version)
    assert not info.promoted
    promote(session, model_name=name, version=info.version)
    loaded = load_model(session, model_name=name)
    assert loaded.version == info.version
    assert loaded.feature_refs == trained.result.feature_refs
    assert loaded.sha256 == hashlib.sha256(pickle.dumps(trained.result.estimator, protocol=5)).hexdigest()
    frame = training_frame(
        trained.store, engine=engine, feature_service=trained.result.feature_service, label_table=DEMO_LABELS
    )
    matrix = frame.loc[:, list(loaded.feature_names)].to_numpy(dtype=np.float64)
    expected = trained.result.estimator.predict_proba(matrix)[:, 1]
    scores = loaded.predict_scores(frame.iloc[:, ::-1])  # column order of a frame does not matter
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, expected)
    np.testing.assert_array_equal(loaded.predict_scores(matrix), expected)


def test_versions_list_newest_first_and_promotion_demotes(trained: Trained, session: Session) -> None:
    """Versions list newest first; promoting another version demotes the first: one promoted row per model."""
    name = _model_name()
    first = _register(session, trained.result, model_name=name)
    second = _register(session, trained.result, model_name=name)  # same bytes: still a distinct version
    assert first.version != second.version
    assert VERSION.match(second.version)
    assert [v.version for v in list_versions(session, model_name=name)] == [second.version, first.version]
    promote(session, model_name=name, version=first.version)
    promoted = promote(session, model_name=name, version=second.version)
    assert promoted.promoted
    assert promoted.promoted_at is not None
    versions = {v.version: v for v in list_versions(session, model_name=name)}
    assert versions[second.version].promoted
    assert not versions[first.version].promoted
    count = select(func.count()).where(ModelVersion.model_name == name, ModelVersion.promoted)
    assert session.scalar(count) == 1
    assert load_model(session, model_name=name).version == second.version


def test_tampered_artifact_is_refused(trained: Trained, session: Session) -> None:
    """Artifact bytes changed in SQL: load raises TamperedArtifactError naming the version and both hashes."""
    name = _model_name()
    info = _register(session, trained.result, model_name=name)
    artifact = session.scalar(select(ModelVersion.artifact).where(ModelVersion.version == info.version))
    assert artifact is not None
    tampered = artifact[:-1] + bytes([artifact[-1] ^ 0xFF])
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.version == info.version)
        .values(artifact=tampered)
        .execution_options(synchronize_session=False)
    )
    with pytest.raises(TamperedArtifactError, match=re.escape(info.version)) as raised:
        load_model(session, model_name=name, version=info.version)
    assert info.artifact_sha256[:12] in str(raised.value)
    assert hashlib.sha256(tampered).hexdigest()[:12] in str(raised.value)


def test_unknown_versions_and_nothing_promoted_are_not_found(trained: Trained, session: Session) -> None:
    """Unknown version (load or promote) and a model with nothing promoted raise NotFoundError, saying what to do."""
    name = _model_name()
    with pytest.raises(NotFoundError, match="tandem train --promote"):
        load_model(session, model_name=name)
    info = _register(session, trained.result, model_name=name)
    with pytest.raises(NotFoundError, match="tandem models promote VERSION"):
        load_model(session, model_name=name)
    with pytest.raises(NotFoundError, match="no version 'nope'"):
        load_model(session, model_name=name, version="nope")
    with pytest.raises(NotFoundError, match="no version 'nope'"):
        promote(session, model_name=name, version="nope")
    with pytest.raises(NotFoundError):  # a version of another model is not this model's
        load_model(session, model_name=_model_name(), version=info.version)


def test_empty_or_missing_label_table_is_a_training_error(
    trained: Trained, settings: Settings, stores: Stores, engine: Engine
) -> None:
    """An empty label table, or one that does not exist, raises TrainingError naming it."""
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE features.empty_labels (LIKE features.fraud_labels)")
    try:
        with pytest.raises(TrainingError, match=r"features\.empty_labels is empty"):
            train_model(trained.store, settings, engine=engine, label_table="features.empty_labels")
    finally:
        with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
            conn.execute("DROP TABLE features.empty_labels")
    with pytest.raises(TrainingError, match=r"features\.no_such_labels"):
        train_model(trained.store, settings, engine=engine, label_table="features.no_such_labels")


def test_unknown_feature_service_is_not_found(trained: Trained, settings: Settings, engine: Engine) -> None:
    """Training on a feature service that is not registered raises NotFoundError naming it."""
    with pytest.raises(NotFoundError, match="no_such_service"):
        train_model(trained.store, settings, engine=engine, feature_service="no_such_service")


def _keys_and_times(frame: pd.DataFrame) -> Iterator[tuple[int, datetime]]:
    times = [moment.to_pydatetime() for moment in pd.DatetimeIndex(frame["event_timestamp"])]
    return zip((int(v) for v in frame["customer_id"].to_numpy()), times, strict=True)


def _expected_txn_amount(conn: psycopg.Connection[Any], customer_id: int, at: datetime) -> float | None:
    row = conn.execute(
        f"SELECT txn_amount_24h FROM {TXN_TABLE} WHERE customer_id = %s "  # noqa: S608 - constant table
        "AND event_timestamp <= %s AND event_timestamp >= %s - interval '2 days' "
        "ORDER BY event_timestamp DESC, created DESC LIMIT 1",
        (customer_id, at, at),
    ).fetchone()
    return None if row is None else float(row[0])


def test_training_set_never_joins_a_feature_row_from_the_future(
    trained: Trained, stores: Stores, engine: Engine
) -> None:
    """A poisoned row one second after each label never appears; each row is the source's latest row before."""
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE features.poison_labels AS SELECT * FROM {LABEL_TABLE} ORDER BY customer_id LIMIT 25"  # noqa: S608
        )
        conn.execute(
            f"INSERT INTO {TXN_TABLE} (customer_id, event_timestamp, created, txn_amount_24h, max_amount_24h) "  # noqa: S608
            "SELECT customer_id, event_timestamp + interval '1 second', event_timestamp + interval '1 second', "
            "%s, %s FROM features.poison_labels",
            (POISON, POISON),
        )
        try:
            frame = training_frame(
                trained.store,
                engine=engine,
                feature_service=trained.result.feature_service,
                label_table="features.poison_labels",
            )
        finally:
            conn.execute(f"DELETE FROM {TXN_TABLE} WHERE txn_amount_24h = %s", (POISON,))  # noqa: S608
            conn.execute("DROP TABLE features.poison_labels")
        assert len(frame) == 25
        assert not (frame[["txn_amount_24h", "max_amount_24h"]] == POISON).any().any()
        for (customer, at), amount in zip(_keys_and_times(frame), frame["txn_amount_24h"], strict=True):
            assert amount == pytest.approx(_expected_txn_amount(conn, customer, at)), customer


def test_point_in_time_join_is_not_quadratic(trained: Trained) -> None:
    """Feast's join SQL runs without nested loops: 3,000 labels join in under 3 s (8 s with Feast's own run)."""
    assert trained.result.metrics["seconds"]["features"] < 3.0


def _cli_group() -> click.Group:
    group = click.Group("tandem")
    group.add_command(train_cmd)
    group.add_command(models_group)
    return group


def test_cli_train_promote_then_models_list(trained: Trained, settings: Settings, engine: Engine) -> None:
    """`tandem train --promote` prints the metrics and the promoted version; `models list` shows it promoted."""
    cli_settings = settings.model_copy(update={"model_name": _model_name()})
    runner = CliRunner()
    try:
        done = runner.invoke(_cli_group(), ["train", "--promote"], obj=CliContext(settings=cli_settings))
        assert done.exit_code == 0, done.output
        for label in ("ROC AUC", "PR AUC", "Brier", "rows", "positives", "promoted"):
            assert label in done.output
        version = re.search(r"version (\S+)", done.output)
        assert version is not None
        wide = CliContext(settings=cli_settings, console=Console(width=200))
        listed = runner.invoke(_cli_group(), ["models", "list"], obj=wide)
        assert listed.exit_code == 0, listed.output
        line = next(line for line in listed.output.splitlines() if version.group(1) in line)
        assert "yes" in line
        assert "classification" in line
        assert cli_settings.model_name is not None
        assert cli_settings.model_name in line
        unknown = runner.invoke(
            _cli_group(), ["models", "promote", "nope"], obj=CliContext(settings=cli_settings)
        )
        assert isinstance(unknown.exception, NotFoundError)
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == cli_settings.model_name))


def test_loaded_model_uses_the_compiled_trees_and_scores_identically(
    trained: Trained, session: Session, engine: Engine
) -> None:
    """load_model compiles the registered pipeline; the compiled path and predict_proba agree bit for bit."""
    name = _model_name()
    info = _register(session, trained.result, model_name=name)
    loaded = load_model(session, model_name=name, version=info.version)
    assert loaded.compiled is not None
    assert loaded.compiled.n_trees == trained.result.estimator[-1].n_iter_
    without = dataclasses.replace(loaded, compiled=None)
    frame = training_frame(
        trained.store, engine=engine, feature_service=trained.result.feature_service, label_table=DEMO_LABELS
    )
    matrix = frame.loc[:, list(loaded.feature_names)].to_numpy(dtype=np.float64)
    expected = loaded.estimator.predict_proba(matrix)[:, 1]
    np.testing.assert_array_equal(loaded.predict_scores(matrix), expected)
    np.testing.assert_array_equal(without.predict_scores(matrix), expected)
    np.testing.assert_array_equal(loaded.predict_scores(frame), expected)
    for row in matrix[:50]:  # the live API's single rows
        np.testing.assert_array_equal(
            loaded.predict_scores(row[None, :]), without.predict_scores(row[None, :])
        )


# Naive UTC timestamps, boolean labels, other column names.
NAIVE_LABELS = f"SELECT customer_id, (event_timestamp AT TIME ZONE 'UTC') AS labelled_at, label = 1 AS is_fraud FROM {LABEL_TABLE}"  # noqa: S608 - a constant table name


def test_labels_from_a_query_with_naive_timestamps_join_like_the_table(
    trained: Trained, engine: Engine
) -> None:
    """A query with other column names, naive UTC timestamps and boolean labels joins the same feature rows
    at the same instants as the label table, whatever the session's time zone."""
    service = trained.result.feature_service
    expected = training_frame(trained.store, engine=engine, feature_service=service, label_table=DEMO_LABELS)
    far_from_utc = create_engine(engine.url, connect_args={"options": "-c timezone=Pacific/Kiritimati"})
    try:  # a session 14 hours ahead of UTC must not shift naive times
        frame = training_frame(
            trained.store,
            engine=far_from_utc,
            feature_service=service,
            label_table=NAIVE_LABELS + ";",
            label_column="is_fraud",
            timestamp_column="labelled_at",
        )
    finally:
        far_from_utc.dispose()
    assert len(frame) == len(expected) == CUSTOMERS
    pd.testing.assert_series_equal(frame["event_timestamp"], expected["event_timestamp"])
    assert (frame["label"] == (expected["label"] == 1)).all()
    features = list(feature_service_refs(trained.store, service))
    names = [ref.split(":")[1] for ref in features]
    pd.testing.assert_frame_equal(frame[names], expected[names])


def test_cli_train_from_a_query_with_a_name_and_label_column(
    trained: Trained, settings: Settings, engine: Engine
) -> None:
    """`tandem train --name --feature-service --labels 'SELECT ...' --label-column --timestamp-column` trains,
    registers under that name (not settings') and keeps the positive class: the greater label value (true)."""
    name = _model_name()
    args = [
        "train",
        "--name",
        name,
        "--feature-service",
        DEMO_FEATURE_SERVICE,
        "--labels",
        NAIVE_LABELS,
        "--label-column",
        "is_fraud",
        "--timestamp-column",
        "labelled_at",
        "--promote",
    ]
    try:
        done = CliRunner().invoke(_cli_group(), args, obj=CliContext(settings=settings))
        assert done.exit_code == 0, done.output
        assert "ROC AUC" in done.output
        with Session(engine) as session:
            model = load_model(session, model_name=name)
            info = list_versions(session, model_name=name)[0]
        assert model.task == "classification"
        assert info.params["positive_label"] == "True"
        assert info.params["labels"] == NAIVE_LABELS
        assert info.metrics["roc_auc"] > 0.7
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == name))


def test_a_regression_model_trains_reports_mae_r2_and_round_trips(
    trained: Trained, settings: Settings, session: Session, engine: Engine
) -> None:
    """--task regression fits a regressor on a numeric target, reports MAE/RMSE/R2 (no ROC AUC), and the
    registered version scores with predict()."""
    query = f"SELECT customer_id, event_timestamp, label * 10.0 + 1 AS risk_points FROM {LABEL_TABLE}"  # noqa: S608
    result = train_model(
        trained.store,
        settings,
        engine=engine,
        label_table=query,
        label_column="risk_points",
        task="regression",
    )
    assert result.task == "regression"
    assert type(result.estimator[-1]).__name__ == "HistGradientBoostingRegressor"
    assert {"mae", "rmse", "r2"} <= set(result.metrics)
    assert "roc_auc" not in result.metrics
    assert result.metrics["r2"] > 0.0
    assert 0.0 < result.metrics["mae"] < 10.0
    name = _model_name()
    info = register_trained(session, model_name=name, result=result)
    loaded = load_model(session, model_name=name, version=info.version)
    assert info.task == loaded.task == "regression"
    assert loaded.compiled is None
    frame = training_frame(
        trained.store, engine=engine, feature_service=result.feature_service, label_table=DEMO_LABELS
    )
    matrix = frame.loc[:, list(loaded.feature_names)].to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(loaded.predict_scores(matrix), result.estimator.predict(matrix))


def test_labels_lacking_a_column_or_with_three_classes_are_training_errors(
    trained: Trained, settings: Settings, engine: Engine
) -> None:
    """A missing label column is named with what was found; three label values are refused for a classifier."""
    with pytest.raises(TrainingError, match=r"lack column\(s\) outcome .*found customer_id, event_timestamp"):
        train_model(trained.store, settings, engine=engine, label_column="outcome")
    three = f"SELECT customer_id, event_timestamp, customer_id % 3 AS bucket FROM {LABEL_TABLE}"  # noqa: S608
    with pytest.raises(TrainingError, match="take 3 values"):
        train_model(trained.store, settings, engine=engine, label_table=three, label_column="bucket")
    text_time = f"SELECT customer_id, event_timestamp::text AS at, label FROM {LABEL_TABLE}"  # noqa: S608
    with pytest.raises(TrainingError, match="timestamp column at of the labels query is text"):
        train_model(trained.store, settings, engine=engine, label_table=text_time, timestamp_column="at")
