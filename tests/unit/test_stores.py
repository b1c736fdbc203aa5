"""Store URLs: parsed once, derived into each library's form, and never shown with a password."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from core.endpoints import feast_environment, parse_postgres_url, parse_redis_url
from core.errors import ConfigurationError
from core.settings import Settings


def test_postgres_url_gives_every_form() -> None:
    """postgresql://user:pw@host:port/db yields the psycopg SQLAlchemy URL, Feast fields and a masked form."""
    endpoint = parse_postgres_url("postgresql://app:s%40cret@db.internal:6543/features")
    assert (endpoint.host, endpoint.port, endpoint.database, endpoint.user) == (
        "db.internal",
        6543,
        "features",
        "app",
    )
    assert endpoint.password == "s@cret"  # noqa: S105 - a test fixture value
    assert endpoint.sqlalchemy_url() == "postgresql+psycopg://app:s%40cret@db.internal:6543/features"
    assert endpoint.masked() == "postgresql://app:***@db.internal:6543/features"
    assert "s@cret" not in endpoint.masked()


def test_postgres_url_defaults_and_driver_suffix() -> None:
    """A URL without port or user gets 5432 and postgres; a `+driver` suffix is accepted."""
    endpoint = parse_postgres_url("postgresql+psycopg://localhost/tandem")
    assert (endpoint.port, endpoint.user, endpoint.password) == (5432, "postgres", "")
    assert endpoint.masked() == "postgresql://postgres@localhost:5432/tandem"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://localhost/db", "must start with postgresql://"),
        ("postgresql://localhost", "needs a host and a database"),
        ("postgresql://localhost:notaport/db", "invalid port"),
    ],
)
def test_bad_postgres_urls_are_named(url: str, fragment: str) -> None:
    """Each malformed PostgreSQL URL gives a ConfigurationError naming the variable and the fault."""
    with pytest.raises(ConfigurationError, match="TANDEM_POSTGRES_URL") as info:
        parse_postgres_url(url)
    assert fragment in str(info.value)


def test_redis_url_gives_feast_connection_string() -> None:
    """redis://user:pw@host:port/db becomes Feast's `host:port,db=N,username=..,password=..`."""
    endpoint = parse_redis_url("redis://default:pw@127.0.0.1:6380/3")
    assert endpoint.feast_connection_string() == "127.0.0.1:6380,db=3,username=default,password=pw"
    assert endpoint.masked() == "redis://default:***@127.0.0.1:6380/3"
    assert parse_redis_url("redis://localhost").feast_connection_string() == "localhost:6379,db=0"


@pytest.mark.parametrize("url", ["http://localhost:6379", "redis://localhost:6379/x", "redis:///0"])
def test_bad_redis_urls_are_named(url: str) -> None:
    """Malformed Redis URLs give a ConfigurationError naming TANDEM_REDIS_URL."""
    with pytest.raises(ConfigurationError, match="TANDEM_REDIS_URL"):
        parse_redis_url(url)


def test_feast_environment_covers_feature_store_yaml() -> None:
    """Every ${VAR} in feature_store.yaml has a value, and the registry lives in its own schema."""
    from core.settings import PROJECT_ROOT

    env = feast_environment(
        parse_postgres_url("postgresql://u:p@h:1/d"), parse_redis_url("redis://h:2/0"), project="proj"
    )
    yaml_text = (PROJECT_ROOT / "feature_repo" / "feature_store.yaml").read_text()
    import re

    wanted = set(re.findall(r"\$\{(\w+)\}", yaml_text))
    assert wanted <= env.keys()
    assert env["TANDEM_FEAST_REGISTRY_URL"].startswith("postgresql+psycopg://u:p@h:1/d?")
    assert "search_path%3Dfeast_registry" in env["TANDEM_FEAST_REGISTRY_URL"]


def test_settings_never_print_secrets() -> None:
    """Store URLs are secrets: repr and str of the settings show them masked."""
    settings = Settings(
        postgres_url=SecretStr("postgresql://u:topsecret@h/d"), redis_url=SecretStr("redis://h")
    )
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in str(settings.model_dump())
    assert not settings.uses_local_stack


def test_rediss_urls_carry_tls_and_the_ca_to_every_library() -> None:
    """rediss:// with a CA file: redis-py's URL keeps both, Feast's string says ssl=true and the CA."""
    endpoint = parse_redis_url("rediss://app:s3cret@cache.internal:6380/1?ssl_ca_certs=/etc/ssl/ca.pem")
    assert (endpoint.tls, endpoint.ca_file, endpoint.db) == (True, "/etc/ssl/ca.pem", 1)
    assert endpoint.url() == "rediss://app:s3cret@cache.internal:6380/1?ssl_ca_certs=/etc/ssl/ca.pem"
    assert endpoint.masked() == "rediss://app:***@cache.internal:6380/1?ssl_ca_certs=/etc/ssl/ca.pem"
    assert endpoint.feast_connection_string() == (
        "cache.internal:6380,db=1,username=app,password=s3cret,ssl=true,ssl_ca_certs=/etc/ssl/ca.pem"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379/0?ssl_ca_certs=/ca.pem", "needs rediss://"),
        ("rediss://h:6379/0?verify=no", "unknown parameter 'verify'"),
        ("redis://:a,b@h:6379/0", "comma in the password"),
        ("http://h:6379/0", "must start with redis:// or rediss://"),
    ],
)
def test_redis_urls_tandem_cannot_carry_everywhere_are_one_line(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_redis_url(url)
