"""Tandem's own tables, in schema `tandem`. Alembic (`migrations/`) creates them; Feast's are never touched.

Bulk rows (batch predictions) go through COPY; these mappings are for the few rows per run and for
Alembic's autogenerate check.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "SCHEMA",
    "Base",
    "BatchPrediction",
    "JobRun",
    "ModelVersion",
    "PredictionRun",
    "PushOutbox",
    "SkewFinding",
    "SkewReport",
    "SpecSnapshot",
    "StreamSeen",
]

SCHEMA = "tandem"

_naming = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base bound to schema `tandem` with stable constraint names."""

    metadata = MetaData(schema=SCHEMA, naming_convention=_naming)
    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}  # noqa: RUF012 - SQLAlchemy protocol


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class ModelVersion(Base):
    """A trained model: its artifact, what it reads, how it was trained and how well it did."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(Text, primary_key=True)
    model_name: Mapped[str] = mapped_column(Text)
    task: Mapped[str] = mapped_column(Text, server_default=text("'classification'"))  # or regression
    created_at: Mapped[datetime] = _now()
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    artifact_sha256: Mapped[str] = mapped_column(Text)
    artifact_signature: Mapped[str | None] = mapped_column(Text)  # None: unsigned (core/model/signing.py)
    feature_service: Mapped[str] = mapped_column(Text)
    feature_refs: Mapped[list[Any]] = mapped_column()
    training_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    training_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    metrics: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    params: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    promoted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # At most one promoted version per model name.
        Index(
            "uq_model_versions_promoted",
            "model_name",
            unique=True,
            postgresql_where=text("promoted"),
        ),
    )


class PredictionRun(Base):
    """One prediction run: scored as of `as_of`, published only when every row is online. `kind` is `batch`
    (every entity, point-in-time from the offline store) or `stream` (the entities whose online features
    moved past their stored score, re-scored on those online features; core/rescore)."""

    __tablename__ = "prediction_runs"

    run_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    model_name: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(Text, ForeignKey("model_versions.version"))
    feature_service: Mapped[str] = mapped_column(Text)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text)  # running | loaded | published | failed
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    stage_seconds: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    kind: Mapped[str] = mapped_column(Text, server_default=text("'batch'"))  # batch | stream

    __table_args__ = (
        Index(None, "status", "as_of"),
        Index(None, "model_name", "status"),
        Index(None, "model_name", "kind", "status"),
    )


class BatchPrediction(Base):
    """A stored score per (run, entity), with the event time of each feature view row it used."""

    __tablename__ = "batch_predictions"

    run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("prediction_runs.run_id", ondelete="CASCADE"), primary_key=True
    )
    entity_key: Mapped[str] = mapped_column(
        Text(collation="C"), primary_key=True
    )  # the id's text: core/features/keys.py
    score: Mapped[float] = mapped_column(Double)
    model_version: Mapped[str] = mapped_column(Text)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    feature_snapshot_ts: Mapped[str] = mapped_column(Text)  # JSON: {feature view: ISO event time}

    __table_args__ = (Index(None, "entity_key"),)


class JobRun(Base):
    """One run (or request to run) of a scheduled job, with how long it took and what it did."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(Text)  # the model a per-model job ran for
    trigger: Mapped[str] = mapped_column(Text)  # schedule | manual | api
    status: Mapped[str] = mapped_column(Text)  # requested | running | succeeded | failed | skipped
    requested_at: Mapped[datetime] = _now()
    requested_by: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Double)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    host: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))

    __table_args__ = (Index(None, "job", "started_at"), Index(None, "status"))


class SkewReport(Base):
    """One run of the consistency checker over a sample of entities."""

    __tablename__ = "skew_reports"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    feature_service: Mapped[str] = mapped_column(Text)
    model_name: Mapped[str | None] = mapped_column(Text)
    model_version: Mapped[str | None] = mapped_column(Text)
    watermark: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sample_size: Mapped[int] = mapped_column(Integer)
    entities_checked: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)  # ok | warn | breach
    summary: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    parity: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    job_run_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("job_runs.id", ondelete="SET NULL"))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_by: Mapped[str | None] = mapped_column(Text)
    ack_comment: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index(None, "created_at"),)


class SkewFinding(Base):
    """Per (feature view, feature) of one report: counts per class, distances, status, examples."""

    __tablename__ = "skew_findings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    report_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("skew_reports.id", ondelete="CASCADE"))
    feature_view: Mapped[str] = mapped_column(Text)
    feature: Mapped[str] = mapped_column(Text)
    counts: Mapped[dict[str, Any]] = mapped_column()
    mismatch_rate: Mapped[float] = mapped_column(Double)
    mean_abs_diff: Mapped[float | None] = mapped_column(Double)
    max_abs_diff: Mapped[float | None] = mapped_column(Double)
    psi: Mapped[float | None] = mapped_column(Double)
    js_distance: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(Text)
    examples: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    histogram: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))

    __table_args__ = (Index(None, "report_id", "feature_view", "feature", unique=True),)


class SpecSnapshot(Base):
    """A feature service or view as read from Feast's registry, kept with a fingerprint of that registry.

    Processes that only need names, tables, TTLs and types read this instead of importing Feast (seconds
    of start-up); a changed fingerprint sends them back to Feast, which refreshes the snapshot.
    """

    __tablename__ = "feature_specs"

    project: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)  # service | view
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(Text)
    spec: Mapped[dict[str, Any]] = mapped_column()
    cached_at: Mapped[datetime] = _now()


class PushOutbox(Base):
    """Pushed rows committed offline whose online write has not been confirmed yet.

    Inserted in the push's own transaction with its offline rows, deleted once Redis has them; a drain
    (the next push, or the scheduler's `push_outbox` job) holds a row by setting `lease_until`.
    """

    __tablename__ = "push_outbox"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = _now()
    view: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    payload: Mapped[dict[str, Any]] = mapped_column()  # the online rows (core/push/outbox.py)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


class StreamSeen(Base):
    """Events `tandem stream` has appended offline, by key: a replayed event (redelivered after a crash, or
    sent again by its producer) finds its key here and is not appended twice.

    `event_key` digests the push source and the row's content (streaming/events.py); a row is inserted in
    the same transaction as the offline rows it stands for. Rows older than `stream_seen_keep_s` are pruned
    (BRIN on `seen_at`: the table is append-only in time order).
    """

    __tablename__ = "stream_seen"
    __table_args__ = (Index("ix_stream_seen_seen_at", "seen_at", postgresql_using="brin"),)

    event_key: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    push_source: Mapped[str] = mapped_column(Text)
    broker: Mapped[str] = mapped_column(Text)  # redis | nats
    stream: Mapped[str] = mapped_column(Text)  # the Redis stream or the JetStream stream
    message_id: Mapped[str] = mapped_column(Text)  # the entry id (Redis) or stream sequence (NATS)
    seen_at: Mapped[datetime] = _now()
