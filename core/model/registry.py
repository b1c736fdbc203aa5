"""The model registry over `tandem.model_versions`: register, load (hash- and signature-checked), promote, list.

Artifacts are pickled fitted estimators stored in PostgreSQL, so every replica loads the same bytes. The
sha256 recorded at registration is recomputed before every unpickle: a corrupted or edited artifact is
refused with TamperedArtifactError. The hash lives in the same row as the bytes, so it catches corruption and
partial edits, not someone who can rewrite both columns: registration also signs each version with an HMAC
(core/model/signing.py) whose key is not in the database, and loading refuses, before unpickling, a version
whose signature is missing or does not verify, and every pickle when no key is configured (unless
TANDEM_ALLOW_UNSIGNED_MODELS opts out).

Functions take the session first and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer

from core.errors import NotFoundError
from core.model.compiled_trees import compile_pipeline
from core.model.inputs import check_input_names
from core.model.loaded import COMPILED_MAX_ROWS, LoadedModel, feature_names
from core.model.signing import (
    ArtifactClaims,
    SigningKeys,
    artifact_sha256,
    configured_keys,
    new_version_signature,
    verified_sha256,
)
from core.model.tasks import Task, check_estimator, parse_task
from core.records.tables import ModelVersion

__all__ = [
    "COMPILED_MAX_ROWS",
    "LoadedModel",
    "ModelVersionInfo",
    "as_utc",
    "feature_names",
    "list_versions",
    "load_model",
    "promote",
    "register_model",
    "version_info",
]


@dataclass(frozen=True, slots=True)
class ModelVersionInfo:
    """A registered version without its artifact. `promoted_at` is when it was last promoted (kept on demotion)."""

    version: str
    model_name: str
    task: Task
    created_at: datetime
    artifact_sha256: str
    feature_service: str
    feature_refs: tuple[str, ...]
    training_start: datetime
    training_end: datetime
    metrics: Mapping[str, Any]
    params: Mapping[str, Any]
    promoted: bool
    promoted_at: datetime | None
    signed: bool = False

    @classmethod
    def of(cls, row: ModelVersion) -> ModelVersionInfo:
        """The metadata of one row."""
        return cls(
            version=row.version,
            model_name=row.model_name,
            task=parse_task(row.task),
            created_at=row.created_at.astimezone(UTC),
            artifact_sha256=row.artifact_sha256,
            feature_service=row.feature_service,
            feature_refs=tuple(row.feature_refs),
            training_start=row.training_start.astimezone(UTC),
            training_end=row.training_end.astimezone(UTC),
            metrics=dict(row.metrics),
            params=dict(row.params),
            promoted=row.promoted,
            promoted_at=row.promoted_at.astimezone(UTC) if row.promoted_at else None,
            signed=row.artifact_signature is not None,
        )


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _new_version(session: Session, *, created_at: datetime, sha256: str) -> str:
    """`YYYYMMDDTHHMMSSZ-<8 hex of sha>`; `-2`, `-3`... only if the same bytes were registered that second."""
    base = f"{created_at:%Y%m%dT%H%M%S}Z-{sha256[:8]}"
    version, suffix = base, 1
    while session.scalar(select(ModelVersion.version).where(ModelVersion.version == version)) is not None:
        suffix += 1
        version = f"{base}-{suffix}"
    return version


def register_model(
    session: Session,
    *,
    model_name: str,
    estimator: Any,
    feature_service: str,
    feature_refs: Sequence[str],
    training_start: datetime,
    training_end: datetime,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    task: Task = "classification",
    keys: SigningKeys | None = None,
) -> ModelVersionInfo:
    """Store a fitted estimator (pickled, hashed, signed) with what it reads and how it did; not promoted.

    Signed with the first of `keys` (None: the configured ones); no key: UnverifiedArtifactError, unless
    unsigned models are allowed (then stored unsigned, with a warning).

    InvalidModelError when the estimator is unfitted, cannot score `task` (a classifier needs predict_proba
    and exactly two classes) or takes other inputs than `feature_refs` (names in that order, or their count).
    Naive times are taken as UTC.
    """
    if not feature_refs:
        raise ValueError("feature_refs is empty: a model reads at least one feature")
    task = parse_task(task)
    check_estimator(estimator, task)
    check_input_names(estimator, feature_refs)
    artifact = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    sha256 = artifact_sha256(artifact)
    created_at = datetime.now(UTC)
    version = _new_version(session, created_at=created_at, sha256=sha256)
    claims = ArtifactClaims(sha256, model_name, version, task, tuple(feature_refs))
    row = ModelVersion(
        version=version,
        model_name=model_name,
        task=task,
        created_at=created_at,
        artifact=artifact,
        artifact_sha256=sha256,
        artifact_signature=new_version_signature(configured_keys(keys), claims),
        feature_service=feature_service,
        feature_refs=list(feature_refs),
        training_start=as_utc(training_start),
        training_end=as_utc(training_end),
        metrics=dict(metrics),
        params=dict(params),
        promoted=False,
        promoted_at=None,
    )
    session.add(row)
    session.flush()
    return ModelVersionInfo.of(row)


def _no_promoted(model_name: str) -> NotFoundError:
    return NotFoundError(
        f"no promoted version of model {model_name!r}: "
        "run `tandem train --promote` or `tandem models promote VERSION`"
    )


def _get_version(
    session: Session, *, model_name: str, version: str, with_artifact: bool = True, refresh: bool = False
) -> ModelVersion:
    query = select(ModelVersion).where(ModelVersion.model_name == model_name, ModelVersion.version == version)
    if not with_artifact:
        query = query.options(defer(ModelVersion.artifact))
    if refresh:
        query = query.execution_options(populate_existing=True)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFoundError(f"model {model_name!r} has no version {version!r} (see `tandem models list`)")
    return row


def load_model(
    session: Session, *, model_name: str, version: str | None = None, keys: SigningKeys | None = None
) -> LoadedModel:
    """A version of `model_name` (None: the promoted one), verified before it is unpickled.

    TamperedArtifactError when the artifact does not match its sha256, or its signature is missing or made by
    none of `keys` (None: the configured ones); UnverifiedArtifactError when there is no key to verify it with
    and unsigned models are not allowed.
    """
    if version is None:
        row = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_name == model_name, ModelVersion.promoted)
            .execution_options(populate_existing=True)  # verify the bytes in the database, not a cached copy
        ).one_or_none()
        if row is None:
            raise _no_promoted(model_name)
    else:
        row = _get_version(session, model_name=model_name, version=version, refresh=True)
    actual = verified_sha256(row, configured_keys(keys))
    # Only bytes whose sha256 matches what register_model recorded (and, with keys, signed) are unpickled.
    estimator = pickle.loads(row.artifact)  # noqa: S301 - verified against the registered sha256 and HMAC
    task = parse_task(row.task)
    check_estimator(estimator, task)  # what was unpickled is a fitted model of its task, as registered
    check_input_names(estimator, row.feature_refs)  # once per load: rows arrive in feature_refs' order
    compiled = compile_pipeline(estimator) if task == "classification" else None
    if compiled is not None and compiled.positive_column != 1:
        compiled = None  # its class 1 is not classes_[1], the class Tandem scores: the estimator scores it
    return LoadedModel(
        version=row.version,
        model_name=row.model_name,
        feature_refs=tuple(row.feature_refs),
        estimator=estimator,
        sha256=actual,
        metrics=dict(row.metrics),
        created_at=row.created_at.astimezone(UTC),
        compiled=compiled,  # None: scored by the estimator itself
        task=task,
    ).prepared()


def promote(session: Session, *, model_name: str, version: str) -> ModelVersionInfo:
    """Make `version` the promoted version of `model_name`, demoting the previous one (idempotent)."""
    row = _get_version(session, model_name=model_name, version=version, with_artifact=False)
    if row.promoted:
        return ModelVersionInfo.of(row)
    # Demote first: the partial unique index allows one promoted row per model name at any moment.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.model_name == model_name, ModelVersion.promoted)
        .values(promoted=False)
        .execution_options(synchronize_session="fetch")
    )
    row.promoted = True
    row.promoted_at = datetime.now(UTC)
    session.flush()
    return ModelVersionInfo.of(row)


def list_versions(session: Session, *, model_name: str | None = None) -> list[ModelVersionInfo]:
    """Every version of `model_name` (None: of every model, by name), newest first (empty if none)."""
    query = select(ModelVersion).options(defer(ModelVersion.artifact))
    if model_name is not None:
        query = query.where(ModelVersion.model_name == model_name)
    rows = session.scalars(
        query.order_by(ModelVersion.model_name, ModelVersion.created_at.desc(), ModelVersion.version.desc())
    )
    return [ModelVersionInfo.of(row) for row in rows]


def version_info(session: Session, *, version: str) -> ModelVersionInfo:
    """The metadata of `version`, whichever model it belongs to (versions are unique), or NotFoundError."""
    row = session.scalars(
        select(ModelVersion).options(defer(ModelVersion.artifact)).where(ModelVersion.version == version)
    ).one_or_none()
    if row is None:
        raise NotFoundError(f"no model version {version!r} (see `tandem models list`)")
    return ModelVersionInfo.of(row)
