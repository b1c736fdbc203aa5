"""Liveness locks on a PostgreSQL of the lease tests' own: a job run is dead when no session holds its lock,
whatever host it ran on; a process (or machine) that stops answering loses its lock within its liveness
time, and a run a repair failed meanwhile can no longer be published."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session

from core.errors import TandemError
from core.records.job_runs import PROCESS_DIED, fail_dead_runs
from core.records.liveness import LIVENESS_KEY, Liveness, lock_is_free
from core.records.prediction_runs import OWNED_RUNS_KEY, fail_orphaned_runs, set_run_status
from core.records.tables import JobRun, ModelVersion, PredictionRun
from core.records.tracked_run import tracked_run
from core.stores.resolve import Stores


@pytest.fixture
def model_name(engine: Engine) -> Iterator[str]:
    """A model with one version, its runs and job runs deleted afterwards."""
    name = f"live_{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        session.add(
            ModelVersion(
                version=f"{name}-v1", model_name=name, artifact=b"-",
                artifact_sha256=hashlib.sha256(b"-").hexdigest(), feature_service="fs", feature_refs=[],
                training_start=now - timedelta(days=1), training_end=now,
            )
        )  # fmt: skip
    yield name
    with Session(engine) as session, session.begin():
        session.execute(delete(JobRun).where(JobRun.job == f"test_{name}"))
        session.execute(delete(PredictionRun).where(PredictionRun.model_name == name))
        session.execute(delete(ModelVersion).where(ModelVersion.model_name == name))


def _publishing_run_of(
    engine: Engine, model_name: str, *, host: str, pid: int, lock: int | None
) -> tuple[uuid.UUID, int]:
    """A prediction run left `publishing`, owned by a running job run of `host`/`pid` (with liveness `lock`)."""
    run_id = uuid.uuid4()
    details: dict[str, object] = {OWNED_RUNS_KEY: [str(run_id)]}
    if lock is not None:
        details[LIVENESS_KEY] = lock
    with Session(engine) as session, session.begin():
        session.add(
            PredictionRun(
                run_id=run_id, model_name=model_name, model_version=f"{model_name}-v1", feature_service="fs",
                as_of=datetime.now(UTC), status="publishing", rows=3, stage_seconds={},
            )
        )  # fmt: skip
        job = JobRun(
            job=f"test_{model_name}", trigger="manual", status="running", started_at=datetime.now(UTC),
            attempt=1, host=host, pid=pid, details=details,
        )  # fmt: skip
        session.add(job)
        session.flush()
        return run_id, job.id


def _repair(engine: Engine) -> tuple[list[int], list[uuid.UUID]]:
    with Session(engine) as session, session.begin():
        return fail_dead_runs(session), fail_orphaned_runs(session)


def _status(engine: Engine, run_id: uuid.UUID) -> str:
    with Session(engine) as session:
        row = session.get(PredictionRun, run_id)
        assert row is not None
        return row.status


def test_a_run_of_another_machine_is_dead_once_its_lock_is_free(
    stores: Stores, engine: Engine, model_name: str
) -> None:
    """A job run of another host (its pid means nothing here) is left alone while a session holds its
    liveness lock, and marked "process died" as soon as none does, with the prediction run it left; one of
    another host without a lock (an older Tandem) is never guessed dead."""
    liveness = Liveness(stores.postgres.url(), liveness_s=30)
    alive_run, alive_job = _publishing_run_of(engine, model_name, host="machine-b", pid=1, lock=liveness.key)
    legacy_run, legacy_job = _publishing_run_of(engine, model_name, host="machine-c", pid=1, lock=None)
    try:
        assert _repair(engine) == ([], [])
        assert _status(engine, alive_run) == "publishing"
    finally:
        liveness.release()  # machine B's process ends: its session, and the lock, go with it
    jobs, runs = _repair(engine)
    assert (jobs, runs) == ([alive_job], [alive_run])
    with Session(engine) as session:
        job = session.get(JobRun, alive_job)
        run = session.get(PredictionRun, alive_run)
        assert job is not None
        assert run is not None
        assert (job.status, job.error) == ("failed", PROCESS_DIED)
        assert run.status == "failed"
        assert "pid 1 on machine-b" in (run.error or "")
    assert _status(engine, legacy_run) == "publishing"
    assert legacy_job not in jobs


def test_a_silent_process_loses_its_lock_and_cannot_publish_after_the_repair(
    stores: Stores, engine: Engine, model_name: str
) -> None:
    """A liveness connection that stops pinging (a SIGSTOPped process, a vanished machine) is ended by
    PostgreSQL after liveness_s: the lock is free within liveness_s + 1 s, the repair fails the run, and the
    owner, coming back, cannot record it published."""
    liveness = Liveness(stores.postgres.url(), liveness_s=1.0)
    run_id, job_id = _publishing_run_of(
        engine, model_name, host=socket.gethostname(), pid=1, lock=liveness.key
    )
    liveness._stop.set()  # the pings stop; the connection stays open, as a frozen process's would
    liveness._thread.join()
    stopped = time.monotonic()
    while True:
        with Session(engine) as session, session.begin():
            if lock_is_free(session, liveness.key):
                break
        assert time.monotonic() - stopped < 3.0, "the silent session kept its lock"
        time.sleep(0.1)
    freed_s = time.monotonic() - stopped
    assert 0.9 <= freed_s < 2.5, freed_s
    assert _repair(engine) == ([job_id], [run_id])
    with (
        Session(engine) as session,
        session.begin(),
        pytest.raises(TandemError, match="is failed, not publishing"),
    ):
        set_run_status(session, run_id=run_id, status="published")
    assert _status(engine, run_id) == "failed"
    liveness.release()


def test_a_tracked_run_holds_its_lock_while_it_runs(engine: Engine, model_name: str) -> None:
    """tracked_run notes its lock in its row and holds it until the block ends: a repair meanwhile leaves it
    running, even with its host changed to another machine's."""
    with tracked_run(engine, job=f"test_{model_name}", trigger="manual") as run:
        with Session(engine) as session, session.begin():
            row = session.get(JobRun, run.run_id)
            assert row is not None
            key = row.details[LIVENESS_KEY]
            row.host = "machine-b"
        assert _repair(engine)[0] == []
        with Session(engine) as session, session.begin():
            assert not lock_is_free(session, key)
    with Session(engine) as session, session.begin():
        row = session.get(JobRun, run.run_id)
        assert row is not None
        assert row.status == "succeeded"
        assert lock_is_free(session, key)
