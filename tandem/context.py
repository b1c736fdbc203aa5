"""What every command shares: settings read once, the console, and the stores resolved on demand."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

from core.settings import Settings
from core.stores.resolve import Stores, check_postgres, check_redis, resolve_stores

__all__ = ["CliContext"]


@dataclass
class CliContext:
    """Settings and console for one command invocation."""

    settings: Settings = field(default_factory=Settings)
    console: Console = field(default_factory=Console)

    def stores(self, *, check: bool = True) -> Stores:
        """The stores to use, checked to answer (one clear line if they don't)."""
        stores = resolve_stores(self.settings)
        if check:
            check_postgres(stores.postgres)
            check_redis(stores.redis)
        return stores
