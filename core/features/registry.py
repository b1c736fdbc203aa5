"""Where Feast's SQL registry keeps its tables: the schema named in the registry URL of the repo's
feature_store.yaml.

Tandem reads the registry's tables itself (spec fingerprints, materialization watermarks) to avoid importing
Feast. Their schema is the one Feast's SQL registry writes to: the first entry of the `search_path` in the
registry URL's `options` (`postgresql+psycopg://...?options=-csearch_path%3Dmy_schema`), or `public` when
the URL sets none. The URL is read from the repo's feature_store.yaml after `${VAR}` expansion, as Feast
expands it: the process environment, overridden by the variables Tandem exports for its stores
(`core.endpoints.feast_environment`). Tandem's own repo keeps `feast_registry`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from core.endpoints import feast_environment, registry_schema_of_url
from core.errors import ConfigurationError
from core.settings import Settings
from core.stores.resolve import Stores

__all__ = ["expand_variables", "registry_schema", "registry_url_of_config"]

_VARIABLE = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def expand_variables(text: str, environment: Mapping[str, str]) -> str:
    """`os.path.expandvars` over `environment`: `$NAME` and `${NAME}` replaced, unknown names left as they are."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return environment.get(name, match.group(0))

    return _VARIABLE.sub(replace, text)


def registry_url_of_config(config: Any, *, source: str) -> str:
    """The SQL registry URL of a parsed feature_store.yaml, or ConfigurationError in one line."""
    registry = config.get("registry") if isinstance(config, dict) else None
    if not isinstance(registry, dict) or registry.get("registry_type") != "sql":
        raise ConfigurationError(
            f"{source}: Tandem needs Feast's SQL registry in PostgreSQL (registry: registry_type: sql)"
        )
    url = registry.get("path")
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"{source}: the SQL registry needs a `path` (its database URL)")
    return url


def registry_schema(settings: Settings, stores: Stores) -> str:
    """The schema of the Feast registry tables of the repo in settings (see the module docstring)."""
    path = Path(settings.feature_repo) / "feature_store.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror or exc}") from None
    environment = {
        **os.environ,
        **feast_environment(stores.postgres, stores.redis, project=settings.feast_project),
    }
    try:
        config = yaml.safe_load(expand_variables(text, environment))
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return registry_schema_of_url(registry_url_of_config(config, source=str(path)))
