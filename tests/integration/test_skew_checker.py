"""The skew checker on real stores: untouched data is all `match` with exact parity; injections written with
Feast's own writer are classified exactly as injected and nothing else is flagged; bad input fails with one
clear error and writes no report."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import pandas as pd
import psycopg
import pytest
import redis
from click.testing import CliRunner, Result
from rich.console import Console
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from consistency.checker import run_skew_check
from core.batch.materialize import close_feature_store, run_materialize
from core.batch.predict import run_batch_predict
from core.errors import ConfigurationError, NotFoundError, TandemError
from core.features.feast_repo import apply_feature_repo, open_feature_store
from core.features.watermarks import materialization_watermarks
from core.model.lifecycle import train_and_promote
from core.model.registry import load_model
from core.online.encoding import feature_field, timestamp_field
from core.online.keys import encode_entity_keys
from core.records.skew_models import SkewReportInfo
from core.records.skew_reports import get_report
from core.records.tables import SkewReport
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.commands.skew import check_skew_cmd, skew_group
from tandem.context import CliContext
from tandem.demo.data import PROFILE_TABLE, TXN_TABLE, seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE, DEMO_MODEL
from tests.servers import purge_feast_project

WATERMARK = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
CUSTOMERS = 600
PROFILE = "customer_profile"
TXN = "customer_txn_stats"
PROFILE_FEATURES = (
    "account_age_days",
    "credit_limit",
    "credit_utilization",
    "num_cards",
    "has_2fa",
    "country_risk",
)
TXN_FEATURES = (
    "txn_count_24h",
    "txn_amount_24h",
    "max_amount_24h",
    "txn_count_7d",
    "avg_amount_30d",
    "foreign_txn_ratio_7d",
    "distinct_merchants_7d",
)
FEATURES = {PROFILE: PROFILE_FEATURES, TXN: TXN_FEATURES}

VALUE_LATER = (
    11  # one txn value wrong, written one second after the expected row (still before the watermark)
)
VALUE_SAME_TIME = (
    12  # one profile value wrong, written with the expected row's own timestamp: parity flags it
)
GONE = 13  # key deleted online
TXN_GONE = 14  # the txn view's fields deleted online
STALE = 15  # txn row of the day before the expected one
FRESHER = 16  # pushed after the watermark
EXPIRED = 17  # offline txn rows end three days before the watermark (TTL two days); online gets that old row


@dataclass(frozen=True)
class World:
    """The module's settings (own Feast project and model name), Feast store and Redis client."""

    settings: Settings
    stores: Stores
    store: Any
    client: redis.Redis


def _row(conn: psycopg.Connection[Any], table: str, customer: int, as_of: datetime) -> dict[str, Any]:
    cur = conn.execute(
        f"SELECT * FROM {table} WHERE customer_id = %s AND event_timestamp <= %s "  # noqa: S608 - constants
        "ORDER BY event_timestamp DESC, created DESC LIMIT 1",
        (customer, as_of),
    )
    row = cur.fetchone()
    assert row is not None
    assert cur.description is not None
    return dict(zip([c.name for c in cur.description], row, strict=True))


@pytest.fixture(scope="module")
def world(settings: Settings, stores: Stores, engine: Engine) -> Iterator[World]:
    """600 customers x 5 days reseeded in a Feast project of its own; EXPIRED's recent txn rows removed
    offline; materialized up to the watermark; a model trained, promoted and batch-scored as of it."""
    own = settings.model_copy(update={"feast_project": f"s{uuid.uuid4().hex[:10]}", "model_name": DEMO_MODEL})
    apply_feature_repo(own, stores)
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=5, seed=7, end=WATERMARK)
        conn.execute(
            f"DELETE FROM {TXN_TABLE} WHERE customer_id = %s AND event_timestamp > %s",  # noqa: S608 - constant
            (EXPIRED, WATERMARK - timedelta(days=2, hours=2)),
        )
    store = open_feature_store(own, stores)
    train_and_promote(store, own, engine=engine)
    run_materialize(own, stores, end=WATERMARK)
    run_batch_predict(own, stores, model_name=DEMO_MODEL, as_of=WATERMARK)
    client = redis.Redis.from_url(stores.redis.url())
    try:
        yield World(settings=own, stores=stores, store=store, client=client)
    finally:
        close_feature_store(store)
        client.close()
        purge_feast_project(stores.redis, own.feast_project)


def _flagged(report: SkewReportInfo) -> set[tuple[int, str, str]]:
    """(entity, view:feature, class) of every example that is not a match."""
    return {
        (example["entity_id"], finding.ref, example["class"])
        for finding in report.findings
        for example in finding.examples
    }


def test_watermarks_equal_feasts_own(world: World) -> None:
    """The watermark read from the registry's proto bytes is Feast's latest materialization interval end."""
    with psycopg.connect(world.stores.postgres.url()) as conn:
        ours = materialization_watermarks(conn, project=world.settings.feast_project, views=[PROFILE, TXN])
    for name in (PROFILE, TXN):
        view = world.store.registry.get_feature_view(name, world.settings.feast_project, allow_cache=False)
        assert ours[name] == max(end for _, end in view.materialization_intervals)
        assert ours[name] == WATERMARK


def test_untouched_data_has_no_findings_and_exact_parity(world: World, engine: Engine) -> None:
    """Right after materialization every (entity, feature) of every entity is a match, every status is ok,
    and every stored score equals its live re-score (all entities unchanged since the batch run)."""
    report = run_skew_check(world.settings, world.stores, model_name=DEMO_MODEL, all_entities=True)
    assert report.entities_checked == CUSTOMERS
    assert report.status == "ok"
    assert report.watermark == WATERMARK
    assert len(report.findings) == len(PROFILE_FEATURES) + len(TXN_FEATURES)
    for finding in report.findings:
        assert finding.counts["match"] == CUSTOMERS, finding.ref
        assert finding.mismatch_rate == 0.0
        assert finding.examples == []
        assert finding.psi == pytest.approx(0.0, abs=1e-12)
        assert finding.js_distance == pytest.approx(0.0, abs=1e-6)
        assert finding.status == "ok"
        assert finding.histogram["offline"] == finding.histogram["online"]
    parity = report.parity
    assert parity["status"] == "ok"
    assert parity["counts"]["unchanged"] == CUSTOMERS
    assert parity["unchanged"]["disagree"] == 0
    assert parity["unchanged"]["max_abs_diff"] <= 1e-9
    assert parity["changed"] == {"count": 0}
    assert parity["flagged"] == []
    with Session(engine) as session:
        assert get_report(session, report_id=report.id).findings == report.findings


def _write(world: World, view: str, row: dict[str, Any], *, at: datetime, **changes: Any) -> None:
    """Write one row online with Feast's own writer (`write_to_online_store`)."""
    data = {"customer_id": row["customer_id"], "event_timestamp": at, "created": at}
    data |= {name: row[name] for name in FEATURES[view]} | changes
    world.store.write_to_online_store(view, pd.DataFrame([data]))


def _key(world: World, customer: int) -> bytes:
    import numpy as np

    return encode_entity_keys(
        join_key="customer_id", entity_ids=np.array([customer]), project=world.settings.feast_project
    )[0]


def _drop_view(world: World, customer: int, view: str, *, features: bool = True) -> None:
    fields = [timestamp_field(view)] + ([feature_field(view, f) for f in FEATURES[view]] if features else [])
    world.client.hdel(_key(world, customer), *fields)  # type: ignore[arg-type]  # bytes fields


def _changed_score_value(world: World, customer: int) -> float:
    """A credit_utilization for VALUE_SAME_TIME that moves the model's score (checked with the model)."""
    from core.stores.database import create_db_engine

    rows = world.store.get_online_features(
        features=world.store.get_feature_service(DEMO_FEATURE_SERVICE),
        entity_rows=[{"customer_id": customer}],
    ).to_df()
    engine = create_db_engine(world.stores.postgres, pool_size=1)
    try:
        with Session(engine) as session:
            model = load_model(session, model_name=DEMO_MODEL)
    finally:
        engine.dispose()
    base = float(model.predict_scores(rows)[0])
    for candidate in (0.99, 0.0, 0.5, 0.01, 0.75):
        changed = rows.assign(credit_utilization=candidate)
        if abs(float(model.predict_scores(changed)[0]) - base) > 1e-6:
            return candidate
    raise AssertionError("no credit_utilization value moves the score")


@pytest.fixture(scope="module")
def injected(world: World) -> tuple[SkewReportInfo, set[tuple[int, str, str]]]:
    """Inject one case per class with Feast's writer / Redis deletes, check all entities; return the report and
    the (entity, feature, class) triples that were injected."""
    expected: set[tuple[int, str, str]] = set()
    with psycopg.connect(world.stores.postgres.url()) as conn:
        rows = {
            (customer, view): _row(conn, PROFILE_TABLE if view == PROFILE else TXN_TABLE, customer, WATERMARK)
            for customer in (VALUE_LATER, VALUE_SAME_TIME, STALE, FRESHER)
            for view in (PROFILE, TXN)
        }
        expired_row = _row(conn, TXN_TABLE, EXPIRED, WATERMARK)
        stale_row = _row(conn, TXN_TABLE, STALE, rows[(STALE, TXN)]["event_timestamp"] - timedelta(seconds=1))

    later = rows[(VALUE_LATER, TXN)]
    _write(world, TXN, later, at=later["event_timestamp"] + timedelta(seconds=1), txn_amount_24h=123456.5)
    expected.add((VALUE_LATER, f"{TXN}:txn_amount_24h", "value_mismatch"))

    same = rows[(VALUE_SAME_TIME, PROFILE)]
    utilization = _changed_score_value(world, VALUE_SAME_TIME)
    _drop_view(world, VALUE_SAME_TIME, PROFILE, features=False)  # Feast writes only rows newer than `_ts`
    _write(world, PROFILE, same, at=same["event_timestamp"], credit_utilization=utilization)
    expected.add((VALUE_SAME_TIME, f"{PROFILE}:credit_utilization", "value_mismatch"))

    world.client.delete(_key(world, GONE))
    _drop_view(world, TXN_GONE, TXN)
    expected |= {(GONE, f"{v}:{f}", "missing_online") for v, names in FEATURES.items() for f in names}
    expected |= {(TXN_GONE, f"{TXN}:{f}", "missing_online") for f in TXN_FEATURES}

    _drop_view(world, STALE, TXN, features=False)
    _write(world, TXN, stale_row, at=stale_row["event_timestamp"])
    expected |= {(STALE, f"{TXN}:{f}", "stale_online") for f in TXN_FEATURES}

    from feast.data_source import PushMode

    fresher = rows[(FRESHER, TXN)]
    push = {"customer_id": FRESHER, "event_timestamp": datetime.now(UTC), "created": datetime.now(UTC)}
    push |= {name: fresher[name] for name in TXN_FEATURES} | {"txn_count_24h": 77}
    world.store.push("customer_txn_stats_push", pd.DataFrame([push]), to=PushMode.ONLINE)
    expected |= {(FRESHER, f"{TXN}:{f}", "fresher_online") for f in TXN_FEATURES}

    _write(world, TXN, expired_row, at=expired_row["event_timestamp"])
    assert expired_row["event_timestamp"] < WATERMARK - timedelta(days=2)
    expected |= {(EXPIRED, f"{TXN}:{f}", "expired_online") for f in TXN_FEATURES}

    return run_skew_check(
        world.settings, world.stores, model_name=DEMO_MODEL, all_entities=True, sample=None
    ), expected


def test_injections_are_classified_exactly(
    injected: tuple[SkewReportInfo, set[tuple[int, str, str]]],
) -> None:
    """Every injected (entity, feature) has exactly the injected class, and every other one is a match."""
    report, expected = injected
    assert _flagged(report) == expected
    for finding in report.findings:
        mine = [cls for _, ref, cls in expected if ref == finding.ref]
        assert finding.counts["match"] == CUSTOMERS - len(mine), finding.ref
        for cls in ("value_mismatch", "missing_online", "stale_online", "fresher_online", "expired_online"):
            assert finding.counts[cls] == mine.count(cls), (finding.ref, cls)
    txn_amount = next(f for f in report.findings if f.feature == "txn_amount_24h")
    assert txn_amount.max_abs_diff is not None
    assert txn_amount.max_abs_diff > 1000
    assert report.summary["counts"]["fresher_online"] == len(TXN_FEATURES)


def test_parity_flags_the_unchanged_entity_with_a_changed_value(
    injected: tuple[SkewReportInfo, set[tuple[int, str, str]]],
) -> None:
    """The entity whose profile value changed under the batch run's timestamp is the only parity failure,
    named with that one feature; the report is a breach; entities with newer rows are summarised instead."""
    report, _ = injected
    parity = report.parity
    assert parity["status"] == "breach"
    assert report.status == "breach"
    assert [item["entity_id"] for item in parity["flagged"]] == [VALUE_SAME_TIME]
    assert [f["feature"] for f in parity["flagged"][0]["features"]] == [f"{PROFILE}:credit_utilization"]
    assert parity["unchanged"]["disagree"] == 1
    assert parity["counts"]["no_stored"] == 1  # GONE lost its stored score with its key
    # Newer, older or gone txn rows since the run. EXPIRED is unchanged: its old row is past the TTL now, so
    # live scoring drops it, exactly as the batch run (which had no row in the TTL window) did.
    assert parity["changed"]["count"] == 4  # VALUE_LATER, TXN_GONE, STALE, FRESHER
    assert parity["counts"]["unchanged"] == CUSTOMERS - 1 - 4


def _reports(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(SkewReport)) or 0)


@pytest.mark.parametrize("sample", [0, -5])
def test_bad_sample_size_writes_no_report(world: World, engine: Engine, sample: int) -> None:
    """A sample of zero or fewer entities is refused with a message naming it, and no report is written."""
    before = _reports(engine)
    with pytest.raises(ConfigurationError, match=f"positive number of entities, got {sample}"):
        run_skew_check(world.settings, world.stores, model_name=DEMO_MODEL, sample=sample)
    assert _reports(engine) == before


def test_unknown_model_writes_no_report(world: World, engine: Engine) -> None:
    """A model without a promoted version: NotFoundError naming it, no report."""
    before = _reports(engine)
    with pytest.raises(NotFoundError, match="nope_v9"):
        run_skew_check(world.settings, world.stores, model_name="nope_v9")
    assert _reports(engine) == before


def test_never_materialized_writes_no_report(world: World, stores: Stores, engine: Engine) -> None:
    """A project whose views were never materialized: a TandemError saying so, no report."""
    fresh = world.settings.model_copy(update={"feast_project": f"n{uuid.uuid4().hex[:10]}"})
    apply_feature_repo(fresh, stores)
    before = _reports(engine)
    with pytest.raises(TandemError, match="never been materialized"):
        run_skew_check(fresh, stores, model_name=DEMO_MODEL, sample=10)
    assert _reports(engine) == before


def test_seeded_sample_is_repeatable(world: World) -> None:
    """The same seed samples the same entities; the sample size is what was asked."""
    first = run_skew_check(world.settings, world.stores, model_name=DEMO_MODEL, sample=50, seed=3)
    second = run_skew_check(world.settings, world.stores, model_name=DEMO_MODEL, sample=50, seed=3)
    assert first.entities_checked == second.entities_checked == 50
    assert first.summary["population"] == CUSTOMERS
    assert [f.counts for f in first.findings] == [f.counts for f in second.findings]


def _cli() -> click.Group:
    group = click.Group("tandem")
    group.add_command(check_skew_cmd)
    group.add_command(skew_group)
    return group


def _invoke(world: World, *args: str) -> Result:
    context = CliContext(settings=world.settings, console=Console(width=220, force_terminal=False))
    return CliRunner().invoke(_cli(), list(args), obj=context)


def test_cli_check_skew_prints_the_table_and_exits_1_on_breach(
    world: World, engine: Engine, injected: tuple[SkewReportInfo, set[tuple[int, str, str]]]
) -> None:
    """`tandem check-skew --all` on the injected data prints every feature with its classes, the parity
    summary naming the flagged entity, and exits 1 (breach); `skew list` and `skew show ID` show the report."""
    done = _invoke(world, "check-skew", "--all")
    assert done.exit_code == 1, done.output
    for name in (*PROFILE_FEATURES, *TXN_FEATURES, "parity", "breach", f"flagged entity {VALUE_SAME_TIME}"):
        assert name in done.output
    with Session(engine) as session:
        newest = session.scalar(select(func.max(SkewReport.id)))
    listed = _invoke(world, "skew", "list")
    assert listed.exit_code == 0, listed.output
    assert str(newest) in listed.output
    shown = _invoke(world, "skew", "show", str(newest))
    assert shown.exit_code == 0, shown.output
    assert f"report {newest}" in shown.output
    assert "txn_amount_24h" in shown.output
    unknown = _invoke(world, "skew", "show", "987654321")
    assert isinstance(unknown.exception, NotFoundError)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample", "0"], "must be a positive number of entities, got 0"),
        (["--sample", "-3"], "must be a positive number of entities, got -3"),
        (["--sample", "5", "--all"], "--sample and --all exclude each other"),
    ],
)
def test_cli_bad_sample_is_a_usage_error(world: World, engine: Engine, args: list[str], message: str) -> None:
    """A bad sample option: exit 2 with the reason, and no report written."""
    before = _reports(engine)
    done = _invoke(world, "check-skew", *args)
    assert done.exit_code == 2
    assert message in done.output
    assert _reports(engine) == before


BACKED = 18  # pushed after the watermark the way Tandem pushes: offline append first, then online


def test_online_row_newer_than_everything_offline_past_the_grace_is_online_only_fresh(
    world: World, injected: tuple[SkewReportInfo, set[tuple[int, str, str]]]
) -> None:
    """FRESHER's push reached only Redis (its offline append is missing): with the grace period elapsed
    (here 0 s) its features are online_only_fresh and count as skew; BACKED's push, appended offline at the
    same event time, stays fresher_online; with the default grace (3600 s) FRESHER was fresher_online."""
    first, _ = injected
    assert {(e, c) for e, _, c in _flagged(first) if e == FRESHER} == {(FRESHER, "fresher_online")}
    from feast.data_source import PushMode

    now = datetime.now(UTC)
    with psycopg.connect(world.stores.postgres.url()) as conn:
        row = _row(conn, TXN_TABLE, BACKED, WATERMARK) | {"event_timestamp": now, "created": now}
        columns = ", ".join(row)
        conn.execute(
            f"INSERT INTO {TXN_TABLE} ({columns}) VALUES ({', '.join(['%s'] * len(row))})",  # noqa: S608 - constants
            tuple(row.values()),
        )
    world.store.push("customer_txn_stats_push", pd.DataFrame([row]), to=PushMode.ONLINE)
    report = run_skew_check(
        world.settings.model_copy(update={"skew_fresher_grace_s": 0.0}),
        world.stores,
        model_name=DEMO_MODEL,
        all_entities=True,
        sample=None,
    )
    flagged = _flagged(report)
    assert {(FRESHER, f"{TXN}:{f}", "online_only_fresh") for f in TXN_FEATURES} <= flagged
    assert {(BACKED, f"{TXN}:{f}", "fresher_online") for f in TXN_FEATURES} <= flagged
    for finding in report.findings:
        if finding.feature_view == TXN:
            assert finding.counts["online_only_fresh"] == 1, finding.ref
            assert finding.counts["fresher_online"] == 1, finding.ref
    assert report.summary["counts"]["online_only_fresh"] == len(TXN_FEATURES)
    assert report.mismatch_rate > first.mismatch_rate  # it counts toward the mismatch rate


def test_an_entity_only_online_is_sampled_and_flagged(world: World) -> None:
    """An entity the offline store never had, written only to Redis inside the TTL and before the watermark,
    is found by the check's scan of the online keys and its values are skew (offline says null)."""
    ghost = CUSTOMERS + 10_000
    with psycopg.connect(world.stores.postgres.url()) as conn:
        template = _row(conn, TXN_TABLE, 1, WATERMARK)
    _write(world, TXN, template | {"customer_id": ghost}, at=WATERMARK - timedelta(hours=1))
    try:
        report = run_skew_check(world.settings, world.stores, model_name=DEMO_MODEL, sample=50, seed=3)
        assert report.summary["online_only"] == 1
        assert report.summary["online_only_checked"] == 1
        assert report.entities_checked == 51
        flagged = _flagged(report)
        assert {(ghost, f"{TXN}:{f}", "value_mismatch") for f in TXN_FEATURES} <= flagged
        off = run_skew_check(
            world.settings.model_copy(update={"skew_online_scan_keys": 0}),
            world.stores,
            model_name=DEMO_MODEL,
            sample=50,
            seed=3,
        )
        assert off.summary["online_only"] == 0
        assert ghost not in {e for e, _, _ in _flagged(off)}
    finally:
        world.client.delete(_key(world, ghost))
