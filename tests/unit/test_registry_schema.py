"""The schema of Feast's SQL registry comes from the registry URL of the repo's feature_store.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.endpoints import PostgresEndpoint, RedisEndpoint, registry_schema_of_url
from core.errors import ConfigurationError
from core.features.registry import expand_variables, registry_schema
from core.settings import PROJECT_ROOT, Settings
from core.stores.resolve import Stores

STORES = Stores(
    postgres=PostgresEndpoint("db.internal", 5432, "features", "feast", "s3cret"),
    redis=RedisEndpoint("cache.internal", 6379, 0),
    local=False,
)


@pytest.mark.parametrize(
    ("url", "schema"),
    [
        ("postgresql+psycopg://u:p@h:5432/db?options=-csearch_path%3Dfeast_registry", "feast_registry"),
        ("postgresql://u@h/db?options=-csearch_path%3Dmy_schema", "my_schema"),
        ("postgresql://u@h/db?options=-c%20search_path%3Dmy_schema", "my_schema"),
        ("postgresql://u@h/db?options=-c+search_path%3Dmy_schema", "my_schema"),
        ("postgresql://u@h/db?options=--search_path%3Dreg", "reg"),
        ("postgresql://u@h/db?sslmode=disable&options=-csearch_path%3Dreg%2Cpublic", "reg"),
        ("postgresql://u@h/db?options=-csearch_path%3D%24user%2Cother", "other"),
        ("postgresql://u@h/db?options=-csearch_path%3DMySchema", "myschema"),  # folded, as PostgreSQL does
        ("postgresql://u@h/db?options=-csearch_path%3D%22MySchema%22", "MySchema"),  # quoted: kept
        ("postgresql://u@h/db?options=-cstatement_timeout%3D5000%20-csearch_path%3Dr", "r"),
        ("postgresql://u@h/db?options=-cstatement_timeout%3D5000", "public"),
        ("postgresql+psycopg://u:p@h:5432/db", "public"),
        ("postgresql://u@h/db?sslmode=require", "public"),
    ],
)
def test_schema_of_registry_url(url: str, schema: str) -> None:
    """The first schema of the URL's search_path (skipping $user; folded unless quoted); `public` without one."""
    assert registry_schema_of_url(url) == schema


def test_variables_expand_as_expandvars_does() -> None:
    """`$NAME` and `${NAME}` are replaced; unknown names are left untouched."""
    env = {"A": "1", "B_2": "two"}
    assert expand_variables("x${A}y$B_2 $UNKNOWN ${NOPE} $", env) == "x1ytwo $UNKNOWN ${NOPE} $"


def _repo(tmp_path: Path, registry: str) -> Settings:
    (tmp_path / "feature_store.yaml").write_text(
        f"project: p\nprovider: local\n{registry}\n", encoding="utf-8"
    )
    return Settings(feature_repo=tmp_path)


def test_tandems_own_repo_keeps_feast_registry() -> None:
    """Tandem's feature_repo points the registry at schema feast_registry (via TANDEM_FEAST_REGISTRY_URL)."""
    assert registry_schema(Settings(feature_repo=PROJECT_ROOT / "feature_repo"), STORES) == "feast_registry"


def test_schema_from_a_users_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repo's own registry URL decides, after ${VAR} expansion from the environment: a search_path, or
    `public` when the URL sets none."""
    monkeypatch.setenv("MY_REGISTRY_SCHEMA", "ranking_registry")
    yaml_sql = "registry:\n  registry_type: sql\n  path: postgresql://u@h/db?options=-csearch_path%3D${MY_REGISTRY_SCHEMA}"
    assert registry_schema(_repo(tmp_path, yaml_sql), STORES) == "ranking_registry"
    plain = "registry:\n  registry_type: sql\n  path: postgresql+psycopg://postgres@127.0.0.1:5432/feast"
    assert registry_schema(_repo(tmp_path, plain), STORES) == "public"


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ("registry: data/registry.db", "needs Feast's SQL registry"),
        ("registry:\n  registry_type: file\n  path: data/registry.db", "needs Feast's SQL registry"),
        ("registry:\n  registry_type: sql", "needs a `path`"),
        ("registry: [unclosed", "not valid YAML"),
    ],
)
def test_unusable_registries_fail_in_one_line(tmp_path: Path, registry: str, message: str) -> None:
    """A file registry, a SQL registry without a path or broken YAML: ConfigurationError, one line."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        registry_schema(_repo(tmp_path, registry), STORES)
    assert "\n" not in str(caught.value)


def test_missing_repo_fails_in_one_line(tmp_path: Path) -> None:
    """No feature_store.yaml: ConfigurationError naming the file."""
    with pytest.raises(ConfigurationError, match=r"feature_store\.yaml"):
        registry_schema(Settings(feature_repo=tmp_path / "nowhere"), STORES)
