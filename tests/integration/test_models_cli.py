"""`tandem models register` on real stores: a model trained elsewhere (joblib or skops file) is checked against
its Feast feature service, registered with its task, loaded and scored; every mistake is one line, exit 1."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from core.features.feast_repo import apply_feature_repo, feature_service_refs, open_feature_store
from core.model.registry import feature_names, list_versions, load_model, register_model
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.cli import main
from tandem.demo.names import DEMO_FEATURE_SERVICE
from tests.servers import store_env


@pytest.fixture(scope="module")
def service_refs(settings: Settings, stores: Stores) -> tuple[str, ...]:
    """The repo applied; the refs of the feature service the registered models read."""
    apply_feature_repo(settings, stores)
    return tuple(feature_service_refs(open_feature_store(settings, stores), DEMO_FEATURE_SERVICE))


@pytest.fixture
def model_name(engine: Engine) -> Iterator[str]:
    """A fresh model name; its versions are deleted afterwards."""
    name = f"fraud_lr_{uuid.uuid4().hex[:8]}"
    yield name
    with Session(engine) as session, session.begin():
        session.execute(delete(ModelVersion).where(ModelVersion.model_name == name))


class Tandem:
    """Runs `tandem ...` in this process through the real entry point (one-line errors, exit codes)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of one command."""
        self.capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def tandem(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Tandem:
    """The command line on this session's stores and Feast project."""
    for key, value in store_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped
    return Tandem(capsys)


def _features(names: list[str], rows: int = 2_000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, len(names))), columns=names)


def _one_error_line(code: int, err: str) -> str:
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_register_a_joblib_pipeline_then_load_and_score_it(
    tandem: Tandem,
    service_refs: tuple[str, ...],
    model_name: str,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """A DataFrame-fitted pipeline on 5 of the service's features, shuffled: registered in its own column order,
    promoted, listed with its task, and scored from a matrix exactly as the estimator scores the frame."""
    names = list(feature_names(service_refs))
    chosen = [names[5], names[0], names[9], names[2], names[11]]
    frame = _features(chosen)
    estimator = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        frame, (frame[chosen[0]] > 0).astype(int)
    )
    path = tmp_path / "fraud_lr.joblib"
    joblib.dump(estimator, path)

    code, out, err = tandem(
        "models",
        "register",
        str(path),
        "--name",
        model_name,
        "--feature-service",
        DEMO_FEATURE_SERVICE,
        "--promote",
    )
    assert code == 0, err
    assert "promoted" in out
    with Session(engine) as session:
        loaded = load_model(session, model_name=model_name)
        info = list_versions(session, model_name=model_name)[0]
    assert loaded.feature_names == tuple(chosen)
    assert loaded.task == info.task == "classification"
    assert loaded.compiled is None
    assert info.training_start == info.training_end
    assert abs((info.training_end - datetime.now(UTC)).total_seconds()) < 120
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = loaded.predict_scores(frame.to_numpy())
    assert [str(w.message) for w in caught] == []
    np.testing.assert_array_equal(scores, estimator.predict_proba(frame)[:, 1])

    code, out, err = tandem("models", "list", "--model", model_name)
    assert code == 0, err
    line = next(line for line in out.splitlines() if info.version in line)
    assert "classification" in line
    assert "yes" in line


def test_a_regressor_round_trips_with_its_task(
    tandem: Tandem,
    service_refs: tuple[str, ...],
    model_name: str,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """A regressor fitted on a matrix of all the service's features: --task regression, scores = predict()."""
    x = _features(list(feature_names(service_refs))).to_numpy()
    estimator = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, x[:, 0] * 3.0 + x[:, 1])
    path = tmp_path / "regressor.pkl"
    joblib.dump(estimator, path)
    code, out, err = tandem(
        "models",
        "register",
        str(path),
        "--name",
        model_name,
        "--feature-service",
        DEMO_FEATURE_SERVICE,
        "--task",
        "regression",
    )
    assert code == 0, err
    assert "regression" in out
    with Session(engine) as session:
        version = list_versions(session, model_name=model_name)[0]
        loaded = load_model(session, model_name=model_name, version=version.version)
    assert version.task == loaded.task == "regression"
    assert not version.promoted
    assert loaded.feature_refs == service_refs
    np.testing.assert_array_equal(loaded.predict_scores(x), estimator.predict(x))
    code, out, _ = tandem("models", "list", "--model", model_name)
    assert "regression" in next(line for line in out.splitlines() if version.version in line)


def test_mismatches_are_one_line_and_exit_1(
    tandem: Tandem,
    service_refs: tuple[str, ...],
    model_name: str,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """Extra column, wrong count, unfitted, three classes, unknown service, unknown suffix: one line each."""
    names = list(feature_names(service_refs))
    frame = _features([names[0], "zip_code"])
    cases: list[tuple[str, Any, str]] = [
        ("extra.joblib", LogisticRegression().fit(frame, frame[names[0]] > 0), "zip_code"),
        (
            "count.joblib",
            LogisticRegression().fit(frame.to_numpy(), frame[names[0]] > 0),
            "takes 2 input columns",
        ),
        ("unfitted.joblib", make_pipeline(SimpleImputer(), LogisticRegression()), "not fitted"),
        ("three.joblib", LogisticRegression().fit(_features(names), np.arange(2_000) % 3), "3 classes"),
    ]
    for file_name, estimator, expected in cases:
        path = tmp_path / file_name
        joblib.dump(estimator, path)
        code, _, err = tandem(
            "models",
            "register",
            str(path),
            "--name",
            model_name,
            "--feature-service",
            DEMO_FEATURE_SERVICE,
        )
        assert expected in _one_error_line(code, err), file_name
    good = tmp_path / "count.joblib"
    code, _, err = tandem(
        "models", "register", str(good), "--name", model_name, "--feature-service", "nope_v9"
    )
    assert "nope_v9" in _one_error_line(code, err)
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    code, _, err = tandem("models", "register", str(text), "--name", model_name, "--feature-service", "x")
    assert "unknown model file suffix" in _one_error_line(code, err)
    with Session(engine) as session:
        assert list_versions(session, model_name=model_name) == []


def test_skops_files_load_without_pickle_and_untrusted_types_are_named(
    tandem: Tandem,
    service_refs: tuple[str, ...],
    model_name: str,
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    """A .skops tree pipeline registers (and compiles); one holding a type skops does not trust is refused in one line naming it,
    and accepted once that type is passed with --trust."""
    import skops.io as sio

    names = list(feature_names(service_refs))
    frame = _features(names)
    target = (frame[names[0]] > 0).astype(int)
    plain = make_pipeline(SimpleImputer(add_indicator=True), HistGradientBoostingClassifier(max_iter=20))
    plain.fit(frame, target)
    sio.dump(plain, tmp_path / "plain.skops")
    code, _, err = tandem(
        "models",
        "register",
        str(tmp_path / "plain.skops"),
        "--name",
        model_name,
        "--feature-service",
        DEMO_FEATURE_SERVICE,
    )
    assert code == 0, err
    with Session(engine) as session:
        loaded = load_model(
            session, model_name=model_name, version=list_versions(session, model_name=model_name)[0].version
        )
    assert loaded.compiled is not None  # the trees compile whatever file they came from
    np.testing.assert_array_equal(loaded.predict_scores(frame.to_numpy()), plain.predict_proba(frame)[:, 1])

    custom = make_pipeline(FunctionTransformer(_clip), LogisticRegression()).fit(frame, target)
    sio.dump(custom, tmp_path / "custom.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "custom.skops")
    assert untrusted
    args = ("--name", model_name, "--feature-service", DEMO_FEATURE_SERVICE)
    code, _, err = tandem("models", "register", str(tmp_path / "custom.skops"), *args)
    line = _one_error_line(code, err)
    assert all(name in line for name in untrusted)
    trusted = [arg for name in untrusted for arg in ("--trust", name)]
    code, _, err = tandem("models", "register", str(tmp_path / "custom.skops"), *args, *trusted)
    assert code == 0, err
    with Session(engine) as session:
        assert len(list_versions(session, model_name=model_name)) == 2


def _clip(x: Any) -> Any:
    """A user function inside a pipeline: skops does not trust it by default."""
    return np.clip(x, -3.0, 3.0)


def test_naive_training_times_are_taken_as_utc(
    service_refs: tuple[str, ...], model_name: str, engine: Engine
) -> None:
    """register_model takes naive datetimes as UTC (the same instant as the aware ones)."""
    x = _features(list(feature_names(service_refs))).to_numpy()
    estimator = LogisticRegression().fit(x, x[:, 0] > 0)
    naive_start = datetime(2026, 3, 1, 12, 30)  # noqa: DTZ001 - naive on purpose
    naive_end = datetime(2026, 3, 2)  # noqa: DTZ001 - naive on purpose
    with Session(engine) as session:
        info = register_model(
            session,
            model_name=model_name,
            estimator=estimator,
            feature_service="fs",
            feature_refs=service_refs,
            training_start=naive_start,
            training_end=naive_end,
            metrics={},
            params={},
        )
        session.rollback()
    assert info.training_start == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert info.training_end == datetime(2026, 3, 2, tzinfo=UTC)
    assert info.task == "classification"


def test_models_sign_adopts_unsigned_versions_and_list_shows_them_signed(
    tandem: Tandem, model_name: str, engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`tandem models sign`: needs --all or --model (exit 2) and a key (exit 1, one line); unsigned versions are
    refused unless --adopt-unsigned; then `models list` says signed and the version loads under the key."""
    from core.model.signing import SigningKeys

    rows = np.random.default_rng(0).normal(size=(100, 2))
    with Session(engine) as session, session.begin():
        info = register_model(
            session,
            model_name=model_name,
            estimator=LogisticRegression().fit(rows, rows[:, 0] > 0),
            feature_service="fs",
            feature_refs=("view:a", "view:b"),
            training_start=datetime.now(UTC),
            training_end=datetime.now(UTC),
            metrics={},
            params={},
            keys=SigningKeys(allow_unsigned=True),
        )
    monkeypatch.delenv("TANDEM_MODEL_SIGNING_KEY")
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))  # no generated key file there either
    assert tandem("models", "sign")[0] == 2
    code, _, err = tandem("models", "sign", "--model", model_name)
    assert code == 1
    assert "TANDEM_MODEL_SIGNING_KEY" in err
    assert len(err.strip().splitlines()) == 1
    key = "k" * 43
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", key)
    code, out, err = tandem("models", "sign", "--model", model_name)
    assert code == 1
    assert "refused 1" in out
    assert info.version in err
    assert "--adopt-unsigned" in err
    code, out, _ = tandem("models", "sign", "--model", model_name, "--adopt-unsigned")
    assert code == 0
    assert f"signed 1, already current 0, refused 0 (key {SigningKeys.parse(key).signing_key_id})" in out
    code, out, _ = tandem("models", "list", "--model", model_name)
    assert code == 0
    assert "signed" in out
    assert info.version in out
    cells = [cell.strip() for cell in out.split(info.version, 1)[1].splitlines()[0].split("│")]
    assert cells[-2] == "yes"  # the last column, `signed`
    with Session(engine) as session:
        assert load_model(session, model_name=model_name, version=info.version).version == info.version
