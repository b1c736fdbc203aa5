"""What every command shares: settings read once, the console, and the stores resolved on demand."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rich.console import Console

from core.errors import TandemError
from core.settings import Settings
from core.stores.resolve import Stores, check_postgres, check_redis, resolve_stores

__all__ = ["CliContext", "cli_user"]


def cli_user() -> str:
    """Who runs the command, for `requested_by` of the job runs it records."""
    return os.environ.get("USER") or os.environ.get("USERNAME") or "cli"


@dataclass
class CliContext:
    """Settings and console for one command invocation."""

    settings: Settings = field(default_factory=Settings)
    console: Console = field(default_factory=Console)

    def models(self, stores: Stores, model: str | None) -> list[str]:
        """`[model]` if it has a promoted version, else every promoted model (at least one, or one clear line)."""
        from sqlalchemy.orm import Session  # lazy imports: commands that need no model stay light

        from core.model.promoted import promoted_models
        from core.stores.database import disposing_engine

        with disposing_engine(stores.postgres) as engine, Session(engine) as session:
            found = promoted_models(session, [model] if model is not None else None)
        if not found:
            raise TandemError(
                "no model has a promoted version: `tandem train --promote` or `tandem models promote`"
            )
        return [item.name for item in found]

    def stores(self, *, check: bool = True) -> Stores:
        """The stores to use, checked to answer (one clear line if they don't)."""
        stores = resolve_stores(self.settings)
        if check:
            check_postgres(stores.postgres)
            check_redis(stores.redis)
        return stores
