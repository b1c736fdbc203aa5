"""`POST /v1/push/{push_source}`: fresh rows offline and online (API key required); a thin handler over
`core.push.service.PushService`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from core.push.rows import PushError
from core.push.service import PushService
from service.auth import SECURITY, require_api_key
from service.errors import RequestError

__all__ = ["PushController", "PushRequest", "PushResponse"]


class PushRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Rows for the push source's feature view: join key, event timestamp (with timezone), features."""

    rows: Annotated[list[dict[str, Any]], msgspec.Meta(min_length=1, max_length=1000)]


class PushResponse(msgspec.Struct):
    """What a push did. `online`: `written` (Redis has the rows) or `pending` (committed offline and kept in
    the outbox; the scheduler or the next push writes them online: do not push them again)."""

    push_source: str
    view: str
    rows: int
    written_online: int
    online: Literal["written", "pending"]


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
        self,
        push_service: NamedDependency[PushService],
        push_source: FromPath[str],
        data: JSONBody[PushRequest],
    ) -> PushResponse:
        """Validate every row first (400 naming the row and field: nothing written); PostgreSQL down: 503,
        nothing written; then offline committed first, online after (`online: pending` when Redis missed)."""
        try:
            result = await push_service.push(push_source, data.rows)
        except PushError as exc:
            raise RequestError(str(exc)) from None
        return PushResponse(
            push_source=result.push_source,
            view=result.view.name,
            rows=result.rows,
            written_online=result.written_online,
            online=result.online,
        )
