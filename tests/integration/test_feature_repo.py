"""The Feast repo on real stores: `tandem apply` registers it, materialization serves the newest offline rows,
and plain `feast` commands work with the environment `tandem env` prints."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine

from core.features.feast_repo import (
    apply_feature_repo,
    feature_service_refs,
    materialize_incremental,
    open_feature_store,
)
from core.settings import PROJECT_ROOT, Settings
from core.stores.resolve import Stores
from tandem.demo.data import PROFILE_FEATURES, PROFILE_TABLE, TXN_FEATURES, TXN_TABLE, seed_demo_data
from tandem.demo.names import DEMO_FEATURE_SERVICE

BIN = Path(sys.executable).parent
END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
CUSTOMERS = 300


@pytest.fixture(scope="module")
def materialized(settings: Settings, stores: Stores, engine: Engine) -> Any:
    """Feature repo applied, 300 customers x 5 days seeded and materialized; yields the FeatureStore."""
    assert apply_feature_repo(settings, stores) == [
        "customer_profile",
        "customer_risk_predictions",
        "customer_txn_stats",
    ]
    with psycopg.connect(stores.postgres.url()) as conn:
        seed_demo_data(conn, customers=CUSTOMERS, days=5, seed=11, end=END)
    store = open_feature_store(settings, stores)
    materialize_incremental(store, end=datetime.now(UTC))
    return store


def _latest_offline(
    stores: Stores, table: str, columns: tuple[str, ...], ids: list[int]
) -> dict[int, tuple[Any, ...]]:
    query = (
        f"SELECT DISTINCT ON (customer_id) customer_id, {', '.join(columns)} FROM {table} "  # noqa: S608 - constants
        "WHERE customer_id = ANY(%s) ORDER BY customer_id, event_timestamp DESC, created DESC"
    )
    with psycopg.connect(stores.postgres.url()) as conn:
        return {row[0]: tuple(row[1:]) for row in conn.execute(query, (ids,))}


def test_feature_service_lists_the_model_inputs(materialized: Any, settings: Settings) -> None:
    """The feature service names every profile and transaction feature, in definition order."""
    refs = feature_service_refs(materialized, DEMO_FEATURE_SERVICE)
    expected = [f"customer_profile:{name}" for name in PROFILE_FEATURES] + [
        f"customer_txn_stats:{name}" for name in TXN_FEATURES
    ]
    assert sorted(refs) == sorted(expected)


def test_online_features_are_the_newest_offline_rows(
    materialized: Any, settings: Settings, stores: Stores
) -> None:
    """After materialization, Redis serves each customer's newest offline row; unknown customers get nulls."""
    ids = [1, 2, 17, 150, CUSTOMERS]
    online = materialized.get_online_features(
        features=materialized.get_feature_service(DEMO_FEATURE_SERVICE),
        entity_rows=[{"customer_id": i} for i in [*ids, CUSTOMERS + 1000]],
    ).to_dict()
    profiles = _latest_offline(stores, PROFILE_TABLE, PROFILE_FEATURES, ids)
    txns = _latest_offline(stores, TXN_TABLE, TXN_FEATURES, ids)
    for position, customer in enumerate(ids):
        for columns, rows in ((PROFILE_FEATURES, profiles), (TXN_FEATURES, txns)):
            for index, name in enumerate(columns):
                assert online[name][position] == pytest.approx(rows[customer][index]), (customer, name)
    assert all(online[name][-1] is None for name in (*PROFILE_FEATURES, *TXN_FEATURES))


def test_plain_feast_cli_works_with_tandem_env(materialized: Any, settings: Settings) -> None:
    """`eval "$(tandem env)"` then `feast feature-views list` and `feast materialize-incremental` just work."""
    environment = {
        **os.environ,
        "TANDEM_POSTGRES_URL": settings.postgres_url.get_secret_value() if settings.postgres_url else "",
        "TANDEM_REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
        "TANDEM_FEAST_PROJECT": settings.feast_project,
    }
    printed = subprocess.run(
        [BIN / "tandem", "env"], env=environment, capture_output=True, text=True, check=True
    ).stdout
    exported = {}
    for line in printed.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = shlex.split(value)[0] if value else ""
    shell_env = {**environment, **exported, "PATH": f"{BIN}:{os.environ['PATH']}"}
    repo = PROJECT_ROOT / "feature_repo"
    views = subprocess.run(
        [BIN / "feast", "feature-views", "list"],
        cwd=repo,
        env=shell_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "customer_profile" in views
    assert "customer_txn_stats" in views
    assert "customer_risk_predictions" in views
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    done = subprocess.run(
        [BIN / "feast", "materialize-incremental", now],
        cwd=repo,
        env=shell_env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
