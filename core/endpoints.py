"""Where the stores are: parse the standard URLs once and derive what each library needs.

`postgresql://user:password@host:port/dbname` gives SQLAlchemy's `postgresql+psycopg://` URL, libpq's
conninfo and Feast's host/port/database fields; `redis://[user:password@]host:port/db` gives redis-py's URL
and Feast's `host:port,db=N,password=...` connection string. Passwords never leave here unmasked in text
meant for people. `registry_schema_of_url` finds the schema of Feast's SQL registry in its URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

from core.errors import ConfigurationError

__all__ = [
    "DEFAULT_REGISTRY_SCHEMA",
    "FEAST_REGISTRY_SCHEMA",
    "PostgresEndpoint",
    "RedisEndpoint",
    "feast_environment",
    "parse_postgres_url",
    "parse_redis_url",
    "registry_schema_of_url",
]

FEAST_REGISTRY_SCHEMA = "feast_registry"
"""The schema of the registry of Tandem's own feature repo (`feature_repo/feature_store.yaml`)."""

DEFAULT_REGISTRY_SCHEMA = "public"
"""Where Feast's SQL registry creates its tables when its URL sets no search_path."""


@dataclass(frozen=True, slots=True)
class PostgresEndpoint:
    """One PostgreSQL database, as every library that talks to it needs it."""

    host: str
    port: int
    database: str
    user: str
    password: str = ""

    def _userinfo(self, password: str) -> str:
        return quote(self.user, safe="") + (f":{quote(password, safe='*')}" if password else "")

    def url(self, *, driver: str = "postgresql") -> str:
        """The URL with the password, for libraries only (`driver='postgresql+psycopg'` for SQLAlchemy)."""
        return f"{driver}://{self._userinfo(self.password)}@{self.host}:{self.port}/{self.database}"

    def sqlalchemy_url(self) -> str:
        """SQLAlchemy URL on the psycopg 3 driver."""
        return self.url(driver="postgresql+psycopg")

    def masked(self) -> str:
        """The URL for people: the password replaced by `***`."""
        return f"postgresql://{self._userinfo('***' if self.password else '')}@{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> PostgresEndpoint:
        """The same server, another database."""
        return PostgresEndpoint(self.host, self.port, database, self.user, self.password)


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """One Redis logical database; `tls` for `rediss://` (verified against `ca_file`, else the system CAs)."""

    host: str
    port: int
    db: int = 0
    username: str = ""
    password: str = ""
    tls: bool = False
    ca_file: str = ""

    def _userinfo(self, password: str) -> str:
        if not (self.username or password):
            return ""
        return f"{quote(self.username, safe='')}:{quote(password, safe='*')}@"

    def _url(self, password: str) -> str:
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={quote(self.ca_file, safe='/')}" if self.ca_file else ""
        return f"{scheme}://{self._userinfo(password)}{self.host}:{self.port}/{self.db}{query}"

    def url(self) -> str:
        """redis-py URL with the password (and the CA file, redis-py's `ssl_ca_certs`)."""
        return self._url(self.password)

    def masked(self) -> str:
        """The URL for people: the password replaced by `***`."""
        return self._url("***" if self.password else "")

    def feast_connection_string(self) -> str:
        """Feast's Redis online store format: `host:port,db=N[,username=..][,password=..][,ssl=true,..]`."""
        parts = [f"{self.host}:{self.port}", f"db={self.db}"]
        if self.username:
            parts.append(f"username={self.username}")
        if self.password:
            parts.append(f"password={self.password}")
        if self.tls:
            parts.append("ssl=true")
        if self.ca_file:
            parts.append(f"ssl_ca_certs={self.ca_file}")
        return ",".join(parts)


def parse_postgres_url(url: str) -> PostgresEndpoint:
    """Parse `postgresql://user:password@host:port/dbname`; `postgres://` and `+driver` forms are accepted."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in {"postgresql", "postgres"}:
        raise ConfigurationError(
            f"TANDEM_POSTGRES_URL must start with postgresql://, got {scheme or 'nothing'}://"
        )
    try:
        port = parts.port or 5432
    except ValueError as exc:
        raise ConfigurationError(f"TANDEM_POSTGRES_URL has an invalid port: {exc}") from None
    database = parts.path.lstrip("/")
    if not parts.hostname or not database:
        raise ConfigurationError(
            "TANDEM_POSTGRES_URL needs a host and a database: postgresql://user@host:port/dbname"
        )
    return PostgresEndpoint(
        host=parts.hostname,
        port=port,
        database=unquote(database),
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
    )


def parse_redis_url(url: str) -> RedisEndpoint:
    """Parse `redis://[user:password@]host:port/db`, or `rediss://...[?ssl_ca_certs=/path/ca.pem]` (TLS)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in {"redis", "rediss"}:
        raise ConfigurationError(
            f"TANDEM_REDIS_URL must start with redis:// or rediss://, got {parts.scheme or 'nothing'}://"
        )
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"ssl_ca_certs"})
    if unknown:
        raise ConfigurationError(f"TANDEM_REDIS_URL: unknown parameter {unknown[0]!r} (known: ssl_ca_certs)")
    ca_file = query.get("ssl_ca_certs", [""])[0]
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ConfigurationError(f"TANDEM_REDIS_URL has an invalid port: {exc}") from None
    path = parts.path.lstrip("/")
    if path and not path.isdigit():
        raise ConfigurationError(f"TANDEM_REDIS_URL database must be a number, got {path!r}")
    if not parts.hostname:
        raise ConfigurationError("TANDEM_REDIS_URL needs a host: redis://host:port/db")
    endpoint = RedisEndpoint(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        tls=parts.scheme == "rediss",
        ca_file=ca_file,
    )
    if ca_file and not endpoint.tls:
        raise ConfigurationError("TANDEM_REDIS_URL: ssl_ca_certs needs rediss:// (TLS)")
    for what, value in (
        ("user name", endpoint.username),
        ("password", endpoint.password),
        ("CA path", ca_file),
    ):
        if "," in value:  # Feast's connection string separates its fields with commas and cannot quote them
            raise ConfigurationError(f"TANDEM_REDIS_URL: a comma in the {what} cannot reach Feast; change it")
    return endpoint


def feast_environment(postgres: PostgresEndpoint, redis: RedisEndpoint, *, project: str) -> dict[str, str]:
    """The variables `feature_repo/feature_store.yaml` expands: the same stores, in Feast's words."""
    registry = postgres.sqlalchemy_url() + f"?options=-csearch_path%3D{FEAST_REGISTRY_SCHEMA}"
    return {
        "TANDEM_FEAST_PROJECT": project,
        "TANDEM_PG_HOST": postgres.host,
        "TANDEM_PG_PORT": str(postgres.port),
        "TANDEM_PG_DATABASE": postgres.database,
        "TANDEM_PG_USER": postgres.user,
        "TANDEM_PG_PASSWORD": postgres.password,
        "TANDEM_FEAST_REGISTRY_URL": registry,
        "TANDEM_FEAST_REDIS": redis.feast_connection_string(),
    }


def _search_path(options: str) -> str | None:
    """The value of the last `-c search_path=...` (or `--search_path=...`) in libpq's `options`."""
    found: str | None = None
    words = options.split()
    for index, word in enumerate(words):
        setting = word
        if word == "-c" and index + 1 < len(words):
            setting = words[index + 1]
        elif word.startswith("-c") or word.startswith("--"):
            setting = word[2:]
        name, sep, value = setting.partition("=")
        if sep and name.strip().replace("-", "_") == "search_path":
            found = value
    return found


def registry_schema_of_url(url: str) -> str:
    """The schema Feast's SQL registry at `url` keeps its tables in: the first schema of the `search_path` set
    in the URL's `options` (`?options=-csearch_path%3Dmy_schema`), skipping `$user`, folded to lower case
    unless quoted, as PostgreSQL reads it; `public` when unset."""
    query = parse_qs(urlsplit(url.strip()).query)
    for options in reversed(query.get("options", [])):
        path = _search_path(options)
        if path is None:
            continue
        for entry in (item.strip() for item in path.split(",")):
            quoted = len(entry) > 1 and entry[0] == entry[-1] == '"'
            schema = entry[1:-1] if quoted else entry.lower()  # PostgreSQL folds unquoted names
            if schema and schema != "$user":
                return schema
    return DEFAULT_REGISTRY_SCHEMA
