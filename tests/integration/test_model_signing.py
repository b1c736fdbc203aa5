"""Signed model artifacts on real PostgreSQL: whoever can write `tandem.model_versions` but holds no key cannot
make Tandem unpickle their bytes; without a key, pickles are refused, unless TANDEM_ALLOW_UNSIGNED_MODELS opts
out (then they load as before and a warning says they are unsigned)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import stat
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from litestar.testing import TestClient
from pydantic import SecretStr
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from core.batch.predict import run_batch_predict
from core.errors import ConfigurationError, InvalidModelError, TamperedArtifactError, UnverifiedArtifactError
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


def _register(
    session: Session,
    model_name: str,
    keys: SigningKeys | None,
    seed: int = 0,
    *,
    feature_service: str = "signed_service",
    refs: tuple[str, ...] | list[str] = REFS,
) -> ModelVersionInfo:
    now = datetime.now(UTC)
    return register_model(
        session,
        model_name=model_name,
        estimator=_estimator(seed, inputs=len(refs)),
        feature_service=feature_service,
        feature_refs=list(refs),
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


def test_without_a_key_nothing_is_unpickled_and_the_refusal_is_one_line(
    session: Session, model_name: str, tmp_path: Path
) -> None:
    """No key and no opt-out: registering is refused, and so is loading any stored pickle, signed or swapped
    (a code-running pickle with a matching sha256 never runs); the line names the key and the opt-out."""
    with pytest.raises(UnverifiedArtifactError, match="refusing to register") as raised:
        _register(session, model_name, SigningKeys())
    assert "\n" not in str(raised.value)
    info = _register(session, model_name, NEW)
    with pytest.raises(UnverifiedArtifactError, match="TANDEM_MODEL_SIGNING_KEY") as raised:
        load_model(session, model_name=model_name, version=info.version, keys=SigningKeys())
    assert info.version in str(raised.value)
    assert "TANDEM_ALLOW_UNSIGNED_MODELS=true" in str(raised.value)
    marker = tmp_path / "code-ran"
    _swap_artifact(session, info.version, CodeOnUnpickle(marker))
    with pytest.raises(UnverifiedArtifactError):
        load_model(session, model_name=model_name, version=info.version, keys=SigningKeys())
    assert not marker.exists()


def test_the_opt_out_loads_unsigned_pickles_and_a_warning_says_so(
    session: Session, model_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TANDEM_ALLOW_UNSIGNED_MODELS: the old behaviour (a consistent swap is served, attacker code would run)
    plus one warning; the opt-out never excuses a wrong signature once a key is set."""
    unsafe = SigningKeys(allow_unsigned=True)
    info = _register(session, model_name, unsafe)
    assert not info.signed
    other = _estimator(seed=1)
    _swap_artifact(session, info.version, other)
    signing._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="core.model.signing"):
        model = load_model(session, model_name=model_name, version=info.version, keys=unsafe)
    rows = np.random.default_rng(2).normal(size=(5, len(REFS)))
    assert np.array_equal(model.predict_scores(rows), other.predict_proba(rows)[:, 1])
    assert any("TANDEM_ALLOW_UNSIGNED_MODELS" in record.getMessage() for record in caplog.records)
    marker = tmp_path / "code-ran"  # the residual risk the default removes, shown once
    _swap_artifact(session, info.version, CodeOnUnpickle(marker))
    with pytest.raises(InvalidModelError, match="NoneType"):  # what makedirs returned, once it had run
        load_model(session, model_name=model_name, version=info.version, keys=unsafe)
    assert marker.is_dir()
    with pytest.raises(TamperedArtifactError, match="unsigned"):
        load_model(
            session, model_name=model_name, version=info.version, keys=replace(NEW, allow_unsigned=True)
        )


def test_the_generated_key_file_is_private_stable_and_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tandem up`'s key: created once (mode 0600, random, 32+ characters), kept on the next start, used when no
    key is set; TANDEM_MODEL_SIGNING_KEY_FILE names another file; the variable wins over both."""
    from core.stack.local import ensure_signing_key

    monkeypatch.delenv("TANDEM_MODEL_SIGNING_KEY")
    home = tmp_path / "home"
    assert not SigningKeys.from_settings(Settings(home=home)).enabled
    path = ensure_signing_key(Settings(home=home))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert len(text.strip()) >= signing.MIN_KEY_CHARS
    path.chmod(0o644)
    assert ensure_signing_key(Settings(home=home)) == path
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_signing_key(Settings(home=tmp_path / "other")).read_text() != text
    found = SigningKeys.from_settings(Settings(home=home))
    assert found.keys == (text.strip().encode(),)
    assert not found.allow_unsigned
    assert SigningKeys.from_settings(Settings(home=tmp_path, model_signing_key_file=path)).keys == found.keys
    assert (
        SigningKeys.from_settings(Settings(home=home, model_signing_key=SecretStr(NEW.keys[0].decode())))
        == NEW
    )
    with pytest.raises(ConfigurationError, match="cannot be read"):
        SigningKeys.from_settings(Settings(home=home, model_signing_key_file=tmp_path / "missing"))


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
    unsigned = _register(session, model_name, SigningKeys(allow_unsigned=True), seed=1)
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
    monkeypatch.setenv("TANDEM_MODEL_SIGNING_KEY", "new-key-" + "n" * 40)  # registration's
    scoped = scoped.model_copy(update={"model_signing_key": SecretStr("new-key-" + "n" * 40)})  # the API's
    try:
        with Session(engine) as session, session.begin():
            info = _register(session, API_MODEL, None, 5, feature_service=DEMO_FEATURE_SERVICE, refs=refs)
            promote(session, model_name=API_MODEL, version=info.version)
        with TestClient(create_app(scoped)) as client:
            assert client.get("/health/ready").json()["models"].get(API_MODEL) == info.version
        with Session(engine) as session, session.begin():
            _swap_artifact(session, info.version, _estimator(seed=6, inputs=len(refs)))
        with caplog.at_level(logging.WARNING), TestClient(create_app(scoped)) as client:
            ready = client.get("/health/ready").json()
        assert API_MODEL not in ready["models"]
        assert "signature" in ready["refused_models"][API_MODEL]
        refusals = [record.getMessage() for record in caplog.records if record.name == "service.model_sync"]
        assert any(info.version in line and "signature" in line for line in refusals)
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == API_MODEL))


def test_an_api_without_a_key_is_not_ready_and_says_why_unless_unsigned_models_are_allowed(
    api_settings: tuple[Settings, tuple[str, ...]],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """An API given no key (none set, no key file under its home) refuses the promoted pickle: /health/ready is
    503 naming the model, the version and TANDEM_MODEL_SIGNING_KEY; with TANDEM_ALLOW_UNSIGNED_MODELS=true it
    serves an unsigned version."""
    scoped, refs = api_settings
    keyless = scoped.model_copy(update={"model_signing_key": None, "home": tmp_path})
    monkeypatch.delenv("TANDEM_MODEL_SIGNING_KEY")
    unsafe = SigningKeys(allow_unsigned=True)
    try:
        with Session(engine) as session, session.begin():
            info = _register(session, API_MODEL, unsafe, 7, feature_service=DEMO_FEATURE_SERVICE, refs=refs)
            promote(session, model_name=API_MODEL, version=info.version)
        with TestClient(create_app(keyless)) as client:
            answer = client.get("/health/ready")
        assert answer.status_code == 503
        body = answer.json()
        assert API_MODEL not in body["models"]  # nor any other: no key verifies them either
        assert f"model {API_MODEL} is refused: version {info.version}" in body["detail"]
        assert "no model signing key is configured" in body["refused_models"][API_MODEL]
        allowed = keyless.model_copy(update={"allow_unsigned_models": True})
        with TestClient(create_app(allowed)) as client:
            answer = client.get("/health/ready")
        assert answer.json()["models"][API_MODEL] == info.version
        assert API_MODEL not in answer.json()["refused_models"]
    finally:
        with Session(engine) as session, session.begin():
            session.execute(delete(ModelVersion).where(ModelVersion.model_name == API_MODEL))


def test_the_demo_on_configured_stores_generates_a_key_only_when_none_is_set(tmp_path: Path) -> None:
    """`tandem demo` with store URLs and no key generates the home's key (its API and scheduler share the
    home); with a key set, or the opt-out, it writes nothing."""
    from rich.console import Console

    from tandem.context import CliContext
    from tandem.demo.steps import _ensure_demo_signing_key

    configured = Settings(
        postgres_url=SecretStr("postgresql://u@127.0.0.1:1/d"),
        redis_url=SecretStr("redis://127.0.0.1:1/0"),
        model_signing_key=None,
    )
    quiet = Console(file=io.StringIO())
    for name, extra in (
        ("keyed", {"model_signing_key": SecretStr("k" * 40)}),
        ("unsafe", {"allow_unsigned_models": True}),
        ("bare", {}),
    ):
        settings = configured.model_copy(update={"home": tmp_path / name, **extra})
        _ensure_demo_signing_key(CliContext(settings=settings, console=quiet))
        assert settings.local_signing_key_path.exists() == (name == "bare")
    bare = configured.model_copy(update={"home": tmp_path / "bare"})
    assert stat.S_IMODE(bare.local_signing_key_path.stat().st_mode) == 0o600
    assert SigningKeys.from_settings(bare).enabled
