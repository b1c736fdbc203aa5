"""An ordinary Feast repo on real stores: its registry in a schema of its own, every scalar feature type,
a one-view feature service, a `query=` source fed by a push source.

Each check runs against Feast itself: `tandem apply` applies the repo (and warns about the push source it
cannot append to), Feast materializes to Redis, and the batch path's model inputs equal, bit for bit, what
the live path decodes from the bytes Feast wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
from click.testing import CliRunner
from pydantic import SecretStr
from rich.console import Console

from consistency.offline_sample import entity_population, expected_view_rows
from core.batch.materialize import close_feature_store
from core.endpoints import PostgresEndpoint, RedisEndpoint
from core.features.feast_repo import open_feature_store, push_sources_without_table
from core.features.inputs import live_input
from core.features.registry import registry_schema
from core.features.snapshots import registry_fingerprint, service_specs
from core.features.specs import ServiceSpec, load_service_spec
from core.features.watermarks import materialization_watermarks
from core.offline.point_in_time import FeatureChunk, stream_point_in_time
from core.online.decoding import value_decoder
from core.online.encoding import feature_field
from core.online.keys import encode_redis_keys
from core.settings import Settings
from core.stores.resolve import Stores
from tandem.commands.data import apply_cmd
from tandem.context import CliContext
from tests.servers import private_database, purge_feast_project

SCHEMA = "ranking_registry"
DRIVERS = 40
NOW = datetime.now(UTC).replace(microsecond=0)
FEATURES = {
    "conv_rate": "Float32",
    "avg_speed": "Float64",
    "trips": "Int32",
    "lifetime_trips": "Int64",
    "active": "Bool",
    "city": "String",
}

_STORE_YAML = (
    """
project: ${TANDEM_FEAST_PROJECT}
provider: local
registry:
  registry_type: sql
  path: "postgresql+psycopg://${TANDEM_PG_USER}:${TANDEM_PG_PASSWORD}@${TANDEM_PG_HOST}:${TANDEM_PG_PORT}/${TANDEM_PG_DATABASE}?options=-csearch_path%3D"""
    + SCHEMA
    + """"
  cache_ttl_seconds: 0
offline_store:
  type: postgres
  host: "${TANDEM_PG_HOST}"
  port: ${TANDEM_PG_PORT}
  database: "${TANDEM_PG_DATABASE}"
  db_schema: public
  user: "${TANDEM_PG_USER}"
  password: "${TANDEM_PG_PASSWORD}"
  sslmode: disable
online_store:
  type: redis
  connection_string: "${TANDEM_FEAST_REDIS}"
entity_key_serialization_version: 3
"""
)

_DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, PushSource, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Bool, Float32, Float64, Int32, Int64, String

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
schema = [
    Field(name="driver_id", dtype=Int64),
    Field(name="conv_rate", dtype=Float32),
    Field(name="avg_speed", dtype=Float64),
    Field(name="trips", dtype=Int32),
    Field(name="lifetime_trips", dtype=Int64),
    Field(name="active", dtype=Bool),
    Field(name="city", dtype=String),
]
table_source = PostgreSQLSource(
    name="driver_kinds_source", table="public.driver_kinds", timestamp_field="event_timestamp"
)
query_source = PostgreSQLSource(
    name="driver_kinds_query",
    query="SELECT * FROM public.driver_kinds",
    timestamp_field="event_timestamp",
)
query_push = PushSource(name="driver_kinds_push", batch_source=query_source)
driver_kinds = FeatureView(
    name="driver_kinds", entities=[driver], ttl=timedelta(days=30), schema=schema, source=table_source
)
driver_kinds_q = FeatureView(
    name="driver_kinds_q", entities=[driver], ttl=timedelta(days=30), schema=schema, source=query_push
)
driver_one_view = FeatureService(name="driver_one_view", features=[driver_kinds])
driver_query = FeatureService(name="driver_query", features=[driver_kinds_q])
"""


@dataclass(frozen=True)
class Repo:
    """The repo's settings (own database, project and repo folder), stores and `tandem apply` output."""

    settings: Settings
    stores: Stores
    applied: str
    exit_code: int


def _seed(conn: psycopg.Connection[Any]) -> None:
    """Three rows per driver, an hour apart; doubles that float32 cannot hold exactly; some nulls."""
    conn.execute(
        "CREATE TABLE public.driver_kinds (driver_id int8, event_timestamp timestamptz, conv_rate float8, "
        "avg_speed float8, trips int4, lifetime_trips int8, active bool, city text)"
    )
    rng = np.random.default_rng(17)
    rows = []
    for driver in range(1, DRIVERS + 1):
        for hours in (3, 2, 1):
            null = driver % 7 == 0 and hours == 1
            rows.append(
                (
                    1000 + driver,
                    NOW - timedelta(hours=hours),
                    None if null else float(rng.normal(0.5, 0.2)),
                    float(rng.normal(60, 15)),
                    None if null else int(rng.integers(-(2**31), 2**31)),
                    int(rng.integers(-(2**62), 2**62)),
                    None if null else bool(driver % 2),
                    None if null else ["Zürich", "Lagos", "東京", ""][driver % 4],
                )
            )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO public.driver_kinds VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)


@pytest.fixture(scope="module")
def repo(
    servers: tuple[PostgresEndpoint, RedisEndpoint], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Repo]:
    """A database of its own (no other test's promoted models), the repo written to a folder, its registry
    schema created, the source table seeded, then `tandem apply` run through the command line."""
    admin, redis_endpoint = servers
    folder = tmp_path_factory.mktemp("own_repo")
    (folder / "feature_store.yaml").write_text(_STORE_YAML, encoding="utf-8")
    (folder / "kinds_repo_definitions.py").write_text(_DEFINITIONS, encoding="utf-8")
    project = f"k{uuid.uuid4().hex[:10]}"
    with private_database(admin) as database:
        settings = Settings(
            postgres_url=SecretStr(database.url()),
            redis_url=SecretStr(redis_endpoint.url()),
            feast_project=project,
            feature_repo=Path(folder),
            home=Path(tmp_path_factory.mktemp("own_home")),
        )
        stores = Stores(postgres=database, redis=redis_endpoint, local=False)
        with psycopg.connect(database.url()) as conn:
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            _seed(conn)
        context = CliContext(settings=settings, console=Console(width=100, force_terminal=False))
        done = CliRunner().invoke(apply_cmd, [], obj=context)
        try:
            yield Repo(settings=settings, stores=stores, applied=done.output, exit_code=done.exit_code)
        finally:
            purge_feast_project(redis_endpoint, project)


def test_apply_warns_about_a_push_source_without_a_table(repo: Repo) -> None:
    """`tandem apply` succeeds and says in one line that the push source feeding a `query=` view cannot
    take pushes; the table-backed view is not mentioned."""
    assert repo.exit_code == 0, repo.applied
    warnings = [line for line in repo.applied.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: push source 'driver_kinds_push' cannot take pushes: its view 'driver_kinds_q' reads a "
        "query, not a table (give the view's PostgreSQLSource a table= to push to it)"
    ]


def test_registry_schema_is_read_from_the_registry_url(repo: Repo) -> None:
    """The registry tables live in the URL's search_path schema; specs, fingerprints and watermarks are read
    there (nothing in feast_registry), and every Feast type gets its own kind."""
    assert registry_schema(repo.settings, repo.stores) == SCHEMA
    with psycopg.connect(repo.stores.postgres.url(), autocommit=True) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (SCHEMA,)
            )
        }
        assert {"feature_views", "feature_services"} <= tables
        assert registry_fingerprint(conn, project=repo.settings.feast_project, schema=SCHEMA) is not None
        assert (
            registry_fingerprint(conn, project=repo.settings.feast_project, schema="feast_registry") is None
        )
    service, view = service_specs(
        repo.settings, repo.stores, feature_service="driver_one_view", predictions_view="driver_kinds_q"
    )
    assert [(f.name, f.kind) for f in service.views[0].features] == [
        ("conv_rate", "float32"),
        ("avg_speed", "float64"),
        ("trips", "int32"),
        ("lifetime_trips", "int64"),
        ("active", "bool"),
        ("city", "string"),
    ]
    assert not service.views[0].reads_query
    assert view.reads_query
    assert view.table == "(SELECT * FROM public.driver_kinds)"


def _spec(repo: Repo, name: str) -> ServiceSpec:
    store = open_feature_store(repo.settings, repo.stores)
    try:
        assert push_sources_without_table(store) == [("driver_kinds_push", "driver_kinds_q")]
        return load_service_spec(store, name)
    finally:
        close_feature_store(store)


def _read_all(repo: Repo, spec: ServiceSpec, *, chunk_rows: int = 7) -> FeatureChunk:
    with psycopg.connect(repo.stores.postgres.url()) as conn:
        chunks = list(stream_point_in_time(conn, spec, as_of=NOW, chunk_rows=chunk_rows))
    assert all(len(chunk) <= chunk_rows for chunk in chunks)
    values = {ref: np.concatenate([c.values[ref] for c in chunks]) for ref in chunks[0].values}
    event_us = {v: np.concatenate([c.event_us[v] for c in chunks]) for v in chunks[0].event_us}
    return FeatureChunk(np.concatenate([c.entity_ids for c in chunks]), values, event_us)


def test_one_view_service_population_and_expected_rows(repo: Repo) -> None:
    """A one-view feature service: the population is each driver once (three rows each offline), sorted, and
    the checker's expected rows read for it without `entity_ids must be sorted and unique`."""
    spec = _spec(repo, "driver_one_view")
    view = spec.views[0]
    with psycopg.connect(repo.stores.postgres.url()) as conn:
        population = entity_population(conn, as_of={view.name: (view, NOW)})
        assert population.tolist() == list(range(1001, 1001 + DRIVERS))
        expected = expected_view_rows(conn, view, as_of=NOW, entity_ids=population)
    assert (expected.event_us == int((NOW - timedelta(hours=1)).timestamp() * 1_000_000)).all()
    assert expected.columns["city"].null.sum() == DRIVERS // 7


def test_query_source_reads_like_its_table(repo: Repo) -> None:
    """A view whose source is `query=` gives the batch path and the checker the same rows as the table."""
    by_table = _read_all(repo, _spec(repo, "driver_one_view"))
    by_query = _read_all(repo, _spec(repo, "driver_query"))
    assert by_query.entity_ids.tolist() == by_table.entity_ids.tolist()
    for name in FEATURES:
        a, b = by_table.values[f"driver_kinds:{name}"], by_query.values[f"driver_kinds_q:{name}"]
        assert [_bits(x) for x in a.tolist()] == [_bits(x) for x in b.tolist()]
    table_view, query_view = _spec(repo, "driver_one_view").views[0], _spec(repo, "driver_query").views[0]
    with psycopg.connect(repo.stores.postgres.url()) as conn:
        population = entity_population(conn, as_of={query_view.name: (query_view, NOW)})
        assert len(population) == DRIVERS
        from_query = expected_view_rows(conn, query_view, as_of=NOW, entity_ids=population)
        from_table = expected_view_rows(conn, table_view, as_of=NOW, entity_ids=population, restrict=False)
    assert from_query.event_us.tolist() == from_table.event_us.tolist()
    for name in FEATURES:
        left, right = from_query.columns[name], from_table.columns[name]
        assert left.null.tolist() == right.null.tolist()
        assert [_bits(v) for v in left.values[~left.null].tolist()] == [
            _bits(v) for v in right.values[~right.null].tolist()
        ]


def _bits(value: Any) -> Any:
    return np.float64(value).view(np.uint64).item() if isinstance(value, float) else value


def test_batch_inputs_equal_what_live_decodes_from_feasts_bytes(repo: Repo) -> None:
    """After Feast materializes the view, each feature's batch input (point-in-time, float32 rounded, strings
    kept) equals bit for bit the live input decoded from the bytes Feast wrote under our Redis key."""
    spec = _spec(repo, "driver_one_view")
    store = open_feature_store(repo.settings, repo.stores)
    try:
        store.materialize(start_date=NOW - timedelta(days=1), end_date=NOW + timedelta(seconds=1))
    finally:
        close_feature_store(store)
    batch = _read_all(repo, spec, chunk_rows=1_000)
    project = repo.settings.feast_project
    keys = encode_redis_keys(["driver_id"], [batch.entity_ids], ["int64"], project=project)
    view = spec.views[0]
    client = redis.Redis.from_url(repo.stores.redis.url())
    try:
        fields = [feature_field(view.name, f.name) for f in view.features]
        stored: list[list[bytes | None]] = [
            client.hmget(key, fields)  # type: ignore[arg-type, misc]  # sync client; bytes keys and fields
            for key in keys
        ]
    finally:
        client.close()
    for n, feature in enumerate(view.features):
        decode = value_decoder(feature.kind)
        live = [live_input(feature.kind, decode(row[n])) for row in stored]
        ours = batch.values[f"{view.name}:{feature.name}"].tolist()
        assert [_bits(v) for v in live] == [_bits(v) for v in ours], feature.name
    conv = batch.values["driver_kinds:conv_rate"]
    assert np.array_equal(conv[~np.isnan(conv)], conv[~np.isnan(conv)].astype(np.float32).astype(np.float64))
    with psycopg.connect(repo.stores.postgres.url()) as conn:
        marks = materialization_watermarks(conn, project=project, views=[view.name], schema=SCHEMA)
    assert marks[view.name] is not None
