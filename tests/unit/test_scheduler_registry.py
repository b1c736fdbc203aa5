"""The scheduler's job registry without I/O: selection by name, the default jobs, the runner hand-off."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from core.endpoints import parse_postgres_url, parse_redis_url
from core.errors import ConfigurationError
from core.records.job_runs import JOB_NAMES
from core.records.tracked_run import RunHandle
from core.settings import Settings
from core.stores.database import create_db_engine
from core.stores.resolve import Stores
from scheduler.entry import current_runner, run_job, serving
from scheduler.job_runner import JobRunner
from scheduler.jobs import default_jobs
from scheduler.registry import Job, JobContext, JobRegistry, RetryPolicy


def _settings() -> Settings:
    return Settings(
        materialize_interval_s=60,
        check_skew_interval_s=600,
        batch_predict_cron="30 3 * * *",
        job_max_attempts=4,
        job_retry_backoff_s=1.5,
        postgres_url=SecretStr("postgresql://nobody@127.0.0.1:1/none"),
    )


def _noop(_ctx: JobContext, _run: RunHandle) -> None:
    """A body that is never run here."""


def _job(name: str) -> Job:
    return Job(name=name, body=_noop, trigger=None, misfire_grace_s=1, retry=RetryPolicy(1, 0.0))


def test_select_keeps_the_named_jobs_in_the_given_order_once_each() -> None:
    """`select("b, a,b")` holds b then a; None or blank selects every job, in registry order."""
    registry = JobRegistry([_job("a"), _job("b"), _job("c")])
    assert list(registry.select("b, a,b")) == ["b", "a"]
    assert list(registry.select(None)) == ["a", "b", "c"]
    assert list(registry.select("  ")) == ["a", "b", "c"]
    assert registry.select("c")["c"] is registry["c"]


def test_select_of_an_unknown_job_names_it_and_the_known_ones() -> None:
    """An unknown name raises ConfigurationError naming it and every registered job."""
    registry = JobRegistry([_job("materialize"), _job("batch_predict")])
    with pytest.raises(ConfigurationError) as caught:
        registry.select("materialize,retrain_everything")
    message = str(caught.value)
    assert "retrain_everything" in message
    assert "materialize, batch_predict" in message


def test_a_job_name_is_registered_once() -> None:
    """Two jobs with one name are a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match="'a'"):
        JobRegistry([_job("a"), _job("a")])


def test_every_default_job_has_a_trigger_a_grace_and_the_settings_retry_policy() -> None:
    """The default registry holds exactly the API's job names; each trigger fires, each grace is positive,
    and retries come from settings; a skew check follows materialization; batch_predict updates the gauge."""
    settings = _settings()
    registry = default_jobs(settings)
    assert set(registry) == set(JOB_NAMES)
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    for name, job in registry.items():
        assert job.name == name
        assert job.trigger.get_next_fire_time(None, now) > now, name
        assert job.misfire_grace_s > 0, name
        assert job.retry == RetryPolicy(max_attempts=4, backoff_s=1.5), name
    assert registry["materialize"].misfire_grace_s == 60
    assert registry["check_skew"].misfire_grace_s == 600
    assert registry["batch_predict"].trigger.get_next_fire_time(None, now) == datetime(
        2025, 3, 2, 3, 30, tzinfo=UTC
    )
    assert registry["materialize"].then == "check_skew"
    assert registry["batch_predict"].after is not None


def test_retry_delays_double_from_the_backoff() -> None:
    """After failed attempts 1, 2 and 3 the waits are backoff, 2x and 4x."""
    policy = RetryPolicy(max_attempts=4, backoff_s=1.5)
    assert [policy.delay_s(attempt) for attempt in (1, 2, 3)] == [1.5, 3.0, 6.0]


def test_persisted_jobs_reach_the_runner_only_while_it_serves() -> None:
    """`serving(runner)` makes it the current runner and clears it afterwards; a second one at the same
    time, or a job firing with none, raises RuntimeError."""
    settings = _settings()
    stores = Stores(
        postgres=parse_postgres_url("postgresql://nobody@127.0.0.1:1/none"),
        redis=parse_redis_url("redis://127.0.0.1:1/0"),
        local=False,
    )
    engine = create_db_engine(stores.postgres)  # never connects: no job runs here
    context = JobContext(settings=settings, stores=stores, engine=engine)
    runner = JobRunner(default_jobs(settings), context)
    with pytest.raises(RuntimeError, match="no scheduler run"):
        run_job("materialize")
    with serving(runner):
        assert current_runner() is runner
        with (
            pytest.raises(RuntimeError, match="already serves"),
            serving(JobRunner(runner.registry, context)),
        ):
            pass  # pragma: no cover
    with pytest.raises(RuntimeError):
        current_runner()
