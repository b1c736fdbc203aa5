"""Feast, pointed at Tandem's stores: the environment feature_store.yaml expands, the store, `feast apply`."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.endpoints import feast_environment
from core.errors import ConfigurationError
from core.features.registry import registry_schema
from core.features.specs import load_service_spec
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = [
    "apply_feature_repo",
    "feast_env",
    "feature_service_refs",
    "materialize_incremental",
    "open_feature_store",
    "push_sources_without_table",
]


def feast_env(settings: Settings, stores: Stores) -> dict[str, str]:
    """The variables feature_store.yaml reads, for these stores and this project."""
    return feast_environment(stores.postgres, stores.redis, project=settings.feast_project)


def _export(settings: Settings, stores: Stores) -> None:
    # Feast expands ${VAR} in feature_store.yaml from the process environment: set it, same as `tandem env`.
    os.environ.update(feast_env(settings, stores))


def open_feature_store(settings: Settings, stores: Stores) -> Any:
    """A FeatureStore on the repo in settings, connected to `stores`."""
    from feast import FeatureStore

    _export(settings, stores)
    return FeatureStore(repo_path=str(settings.feature_repo))


def _forget_repo_modules(repo: Path) -> None:
    """Drop the repo's modules from the import cache so `feast apply` reads the files again: those loaded
    from the repo, and those of another Feast repo named like one of its files (the files import each other
    by bare name, so a repo applied earlier in this process may have left a module of the same name)."""
    root = repo.resolve()
    names = {path.stem for path in root.glob("*.py")}
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if not origin:
            continue
        folder = Path(origin).resolve().parent
        if folder == root or (name in names and (folder / "feature_store.yaml").is_file()):
            del sys.modules[name]


def apply_feature_repo(settings: Settings, stores: Stores) -> list[str]:
    """`feast apply` on the repo in settings; returns the names of the feature views now registered."""
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    _export(settings, stores)
    repo = Path(settings.feature_repo).resolve()  # Feast changes directory into the repo: no relative paths
    if not (repo / "feature_store.yaml").is_file():
        raise ConfigurationError(
            f"{repo} holds no feature_store.yaml: set TANDEM_FEATURE_REPO to a Feast repo"
        )
    config = load_repo_config(repo, repo / "feature_store.yaml")
    with psycopg.connect(stores.postgres.url(), autocommit=True) as conn:  # Feast creates tables, not schemas
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(registry_schema(settings, stores))
            )
        )
    cwd = Path.cwd()
    # Fresh definition objects: Feast mutates them (e.g. materialization intervals) and caches modules.
    _forget_repo_modules(repo)
    added = str(repo.resolve()) not in sys.path
    if added:  # the repo's files import each other by bare name, as under the `feast` command
        sys.path.insert(0, str(repo.resolve()))
    try:
        apply_total(config, repo, skip_source_validation=False)
    finally:
        os.chdir(cwd)  # Feast's apply changes directory into the repo
        if added:
            sys.path.remove(str(repo.resolve()))
    store = open_feature_store(settings, stores)
    return sorted(view.name for view in store.list_feature_views())


def feature_service_refs(store: Any, name: str) -> list[str]:
    """The ordered `view:feature` references of a feature service, or NotFoundError naming it."""
    return list(load_service_spec(store, name).refs)


def materialize_incremental(store: Any, *, end: datetime) -> None:
    """Feast's incremental materialization up to `end` (aware UTC)."""
    store.materialize_incremental(end_date=end)


def push_sources_without_table(store: Any) -> list[tuple[str, str]]:
    """(push source, feature view) for each view fed by a push source whose batch source is not a table.

    Tandem appends pushed rows to the view's offline source table (Feast cannot push offline to PostgreSQL),
    so a view whose PostgreSQLSource has `query=` can be read and materialized but not pushed to.
    """
    from feast.data_source import PushSource  # lazy import: Feast costs seconds to import

    found = []
    for view in store.list_feature_views():
        stream = getattr(view, "stream_source", None)
        if not isinstance(stream, PushSource):
            continue
        table = getattr(view.batch_source, "get_table_query_string", None)
        if table is None or str(table()).startswith("("):
            found.append((str(stream.name), str(view.name)))
    return sorted(found)
