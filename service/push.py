"""`POST /v1/push/{push_source}`: fresh rows offline and online (API key required)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from anyio import to_thread
from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from core.errors import StoreUnavailableError
from core.push.online import write_pushed_online
from core.push.rows import PushError, find_push_view, insert_offline, validate_rows
from service.auth import SECURITY, require_api_key
from service.errors import RequestError
from service.state import ServiceState

__all__ = ["PushController", "PushRequest"]


class PushRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Rows for the push source's feature view: join key, event timestamp (with timezone), features."""

    rows: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=1000)]


class PushController(Controller):
    """Fresh events: appended to the offline table, then written online, in that order."""

    tags = ["push"]  # noqa: RUF012 - Litestar reads class attributes

    @post(
        "/v1/push/{push_source:str}",
        guards=[require_api_key],
        security=SECURITY,
        status_code=200,
        summary="Push fresh feature rows (offline + online)",
    )
    async def push(
        self, state: State, push_source: FromPath[str], data: JSONBody[PushRequest]
    ) -> dict[str, Any]:
        """Validate every row first; on any fault nothing is written anywhere."""
        tandem: ServiceState = state.tandem
        view = find_push_view(tandem.service, push_source)
        try:
            rows = validate_rows(view, data.rows, now=datetime.now(UTC))
        except PushError as exc:
            raise RequestError(str(exc)) from None
        try:
            async with (
                tandem.pg.connection(timeout=tandem.settings.postgres_timeout_s) as conn,
                conn.transaction(),
            ):
                await insert_offline(conn, rows)
                written = await to_thread.run_sync(
                    lambda: write_pushed_online(
                        tandem.redis_sync, project=tandem.settings.feast_project, rows=rows
                    )
                )
        except (OSError, TimeoutError) as exc:
            raise StoreUnavailableError(f"push failed, nothing kept offline: {exc}") from None
        return {
            "push_source": push_source,
            "view": view.name,
            "rows": len(data.rows),
            "written_online": written,
        }
