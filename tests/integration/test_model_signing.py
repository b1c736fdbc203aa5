"""Signed model artifacts on real PostgreSQL: whoever can write `tandem.model_versions` but holds no key cannot
make Tandem unpickle their bytes; without a key, artifacts load as before and a warning says they are unsigned."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from litestar.testing import TestClient
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from core.batch.predict import run_batch_predict
from core.errors import ConfigurationError, InvalidModelError, TamperedArtifactError
from core.features.feast_repo import apply_feature_repo, feature_service_refs, open_feature_store
from core.model import signing
from core.model.registry import ModelVersionInfo, load_model, promote, register_model
from core.model.signing import SigningKeys, sign_versions
from core.records.tables import ModelVersion
from core.settings import Settings
from core.stores.resolve import Stores
from service.app import create_app
from tandem.demo.data import seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE

OLD = SigningKeys.parse("old-key-" + "o" * 40)
NEW = SigningKeys.parse("new-key-" + "n" * 40)
ROTATED = SigningKeys.parse(f"{'new-key-' + 'n' * 40},{'old-key-' + 'o' * 40}")
REFS = ("view:f0", "view:f1", "view:f2")
API_MODEL = "signed_api"
API_VIEW = f"""from entities import customer

from tandem.repo import predictions_view

{API_MODEL}_predictions = predictions_view("{API_MODEL}", entities=[customer])
"""


class CodeOnUnpickle:
    """An attacker's artifact: unpickling it creates a directory (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.makedirs, (str(self.marker),)


def _estimator(seed: int, inputs: int = len(REFS)) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(200, inputs))
    return LogisticRegression().fit(rows, (rows[:, 0] > 0).astype(int))


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction is rolled back after the test (registry functions never commit)."""
    with Session(engine) as session:
        yield session
        session.rollback()


@pytest.fixture
def model_name() -> str:
    """A model name no other test uses."""
    return f"signed_{uuid.uuid4().hex[:8]}"


def _register(session: Session, model_name: str, keys: SigningKeys | None, seed: int = 0) -> ModelVersionInfo:
    now = datetime.now(UTC)
    return register_model(
        session,
        model_name=model_name,
        estimator=_estimator(seed),
        feature_service="signed_service",
        feature_refs=REFS,
        training_start=now,
        training_end=now,
        metrics={},
        params={},
        keys=keys,
    )


def _overwrite(session: Session, version: str, **values: Any) -> None:
    """What someone with write access to the table does, in plain SQL."""
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.version == version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def _swap_artifact(session: Session, version: str, payload: object) -> bytes:
    """Replace a version's artifact and its sha256 consistently (the hash check alone cannot notice)."""
    artifact = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    _overwrite(session, version, artifact=artifact, artifact_sha256=hashlib.sha256(artifact).hexdigest())
    return artifact


def test_registration_signs_and_a_signed_version_loads(session: Session, model_name: str) -> None:
    """With a key, the row holds `hmac-sha256:<key id>:<hex>`, the version lists as signed and it loads."""
    info = _register(session, model_name, NEW)
    signature = session.scalar(
        select(ModelVersion.artifact_signature).where(ModelVersion.version == info.version)
    )
    assert signature is not None
    assert signature.startswith(f"hmac-sha256:{NEW.signing_key_id}:")
    assert info.signed
    model = load_model(session, model_name=model_name, version=info.version, keys=NEW)
    assert model.version == info.version
    assert model.predict_scores(np.zeros((2, len(REFS)))).shape == (2,)


def test_consistent_swap_with_code_is_refused_before_unpickling(
    session: Session, model_name: str, tmp_path: Path
) -> None:
    """A pickle that runs code, with a matching sha256, is refused with a key set: the code never runs."""
    info = _register(session, model_name, NEW)
    marker = tmp_path / "code-ran"
    _swap_artifact(session, info.version, CodeOnUnpickle(marker))
    with pytest.raises(TamperedArtifactError, match="signature") as raised:
        load_model(session, model_name=model_name, version=info.version, keys=NEW)
    assert info.version in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_without_a_key_a_consistent_swap_loads_and_a_warning_says_unsigned(
    session: Session, model_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No key: today's behaviour (the swapped estimator is served, attacker code would run) plus one warning."""
    info = _register(session, model_name, SigningKeys())
    assert not info.signed
    other = _estimator(seed=1)
    _swap_artifact(session, info.version, other)
    signing._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="core.model.signing"):
        model = load_model(session, model_name=model_name, version=info.version, keys=SigningKeys())
    rows = np.random.default_rng(2).normal(size=(5, len(REFS)))
    assert np.array_equal(model.predict_scores(rows), other.predict_proba(rows)[:, 1])
    assert any("unsigned" in record.getMessage() for record in caplog.records)
    marker = tmp_path / "code-ran"  # the residual risk the key removes, shown once
    _swap_artifact(session, info.version, CodeOnUnpickle(marker))
    with pytest.raises(InvalidModelError, match="NoneType"):  # what makedirs returned, once it had run
        load_model(session, model_name=model_name, version=info.version, keys=SigningKeys())
    assert marker.is_dir()


def test_an_unsigned_version_is_refused_while_a_key_is_set(session: Session, model_name: str) -> None:
    """A version registered before the key (or with its signature nulled) is refused, naming the way out."""
    info = _register(session, model_name, NEW)
    _overwrite(session, info.version, artifact_signature=None)
    with pytest.raises(TamperedArtifactError, match=r"unsigned.*--adopt-unsigned"):
        load_model(session, model_name=model_name, version=info.version, keys=NEW)


def test_a_non_ascii_hash_or_signature_is_refused_not_a_crash(session: Session, model_name: str) -> None:
    """Any text in the hash or signature columns is a TamperedArtifactError (compared as bytes), never a TypeError."""
    info = _register(session, model_name, NEW)
    _overwrite(session, info.version, artifact_signature="hmac-sha256:é:" + "é" * 64)
    with pytest.raises(TamperedArtifactError, match="signature"):
        load_model(session, model_name=model_name, version=info.version, keys=NEW)
    _overwrite(session, info.version, artifact_sha256="é" * 64)
    with pytest.raises(TamperedArtifactError, match="recorded hash"):
        load_model(session, model_name=model_name, version=info.version, keys=NEW)


def test_a_signed_artifact_moved_to_another_version_is_refused(session: Session, model_name: str) -> None:
    """Copying a validly signed row's artifact, hash and signature onto another version does not verify."""
    good = _register(session, model_name, NEW, seed=0)
    victim = _register(session, model_name, NEW, seed=1)
    source = session.scalars(select(ModelVersion).where(ModelVersion.version == good.version)).one()
    _overwrite(
        session,
        victim.version,
        artifact=source.artifact,
        artifact_sha256=source.artifact_sha256,
        artifact_signature=source.artifact_signature,
    )
    with pytest.raises(TamperedArtifactError, match=victim.version):
        load_model(session, model_name=model_name, version=victim.version, keys=NEW)


def test_a_key_from_the_environment_is_used_when_none_is_passed(
    session: Session, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_model/register_model without `keys` follow TANDEM_MODEL_SIGNING_KEY (what the API and jobs run)."""
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "old-key-" + "o" * 40)
    info = _register(session, model_name, keys=None)
    assert OLD.verify(
        session.scalar(select(ModelVersion.artifact_signature).where(ModelVersion.version == info.version)),
        signing.ArtifactClaims(info.artifact_sha256, model_name, info.version, info.task, REFS),
    )
    assert load_model(session, model_name=model_name, version=info.version).version == info.version
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "new-key-" + "n" * 40)
    with pytest.raises(TamperedArtifactError):
        load_model(session, model_name=model_name, version=info.version)
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "short")
    with pytest.raises(ConfigurationError, match="at least 32"):
        load_model(session, model_name=model_name, version=info.version)


def test_rotation_old_versions_verify_then_re_signing_moves_them_to_the_new_key(
    session: Session, model_name: str
) -> None:
    """`new,old` loads old-key versions; sign_versions re-signs them (and adopts unsigned ones only if asked)."""
    old_signed = _register(session, model_name, OLD, seed=0)
    unsigned = _register(session, model_name, SigningKeys(), seed=1)
    forged = _register(session, model_name, OLD, seed=2)
    _overwrite(session, forged.version, artifact_signature="hmac-sha256:00000000:" + "0" * 64)
    assert load_model(session, model_name=model_name, version=old_signed.version, keys=ROTATED)
    with pytest.raises(TamperedArtifactError):
        load_model(session, model_name=model_name, version=old_signed.version, keys=NEW)

    first = sign_versions(session, keys=ROTATED, model_name=model_name)
    assert first == {
        "signed": [old_signed.version],
        "current": [],
        "refused": [forged.version, unsigned.version],
    }
    second = sign_versions(session, keys=ROTATED, model_name=model_name, adopt_unsigned=True)
    assert second == {
        "signed": [unsigned.version],
        "current": [old_signed.version],
        "refused": [forged.version],
    }
    for version in (old_signed.version, unsigned.version):
        assert load_model(session, model_name=model_name, version=version, keys=NEW).version == version
    with pytest.raises(TamperedArtifactError):
        load_model(session, model_name=model_name, version=forged.version, keys=ROTATED)
    with pytest.raises(ConfigurationError):
        sign_versions(session, keys=SigningKeys(), model_name=model_name)


def test_batch_predict_refuses_a_swapped_artifact_when_a_key_is_set(
    settings: Settings, stores: Stores, engine: Engine, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch job loads the promoted version through the same check: a consistent swap fails the run early."""
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "new-key-" + "n" * 40)
    try:
        with Session(engine) as session, session.begin():
            info = _register(session, model_name, NEW)
            _overwrite(session, info.version, promoted=True, promoted_at=datetime.now(UTC))
            _swap_artifact(session, info.version, _estimator(seed=3))
        with pytest.raises(TamperedArtifactError, match=info.version):
            run_batch_predict(settings, stores, model_name=model_name)
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == model_name))


@pytest.fixture(scope="module")
def api_settings(
    settings: Settings, stores: Stores, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, tuple[str, ...]]:
    """The demo repo copied with a predictions view for API_MODEL, applied in a project of its own; its refs."""
    repo = tmp_path_factory.mktemp("signed_repo") / "feature_repo"
    shutil.copytree(settings.feature_repo, repo, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "signed_model.py").write_text(API_VIEW)
    scoped = settings.model_copy(
        update={"feature_repo": repo, "feast_project": f"s{uuid.uuid4().hex[:10]}", "model_poll_s": 0.2}
    )
    with psycopg.connect(stores.postgres.url()) as conn:
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        seed_demo_data(conn, customers=50, days=2, seed=31, end=end)
    apply_feature_repo(scoped, stores)
    refs = feature_service_refs(open_feature_store(scoped, stores), DEMO_FEATURE_SERVICE)
    return scoped, tuple(refs)


def test_the_api_serves_a_signed_version_and_refuses_a_consistent_swap(
    api_settings: tuple[Settings, tuple[str, ...]],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With a key in the API's environment, a signed promoted version is served; after its artifact and sha256
    are replaced in SQL, a fresh API refuses it (not in /health/ready's models) and logs why."""
    scoped, refs = api_settings
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "new-key-" + "n" * 40)
    now = datetime.now(UTC)
    try:
        with Session(engine) as session, session.begin():
            info = register_model(
                session,
                model_name=API_MODEL,
                estimator=_estimator(seed=5, inputs=len(refs)),
                feature_service=DEMO_FEATURE_SERVICE,
                feature_refs=refs,
                training_start=now,
                training_end=now,
                metrics={},
                params={},
            )
            promote(session, model_name=API_MODEL, version=info.version)
        with TestClient(create_app(scoped)) as client:
            assert client.get("/health/ready").json()["models"].get(API_MODEL) == info.version
        with Session(engine) as session, session.begin():
            _swap_artifact(session, info.version, _estimator(seed=6, inputs=len(refs)))
        with caplog.at_level(logging.WARNING), TestClient(create_app(scoped)) as client:
            assert API_MODEL not in client.get("/health/ready").json()["models"]
        refusals = [
            record
            for record in caplog.records
            if record.exc_info and isinstance(record.exc_info[1], TamperedArtifactError)
        ]
        assert any(info.version in str(record.exc_info[1]) for record in refusals if record.exc_info)
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == API_MODEL))
