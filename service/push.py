"""`POST /v1/push/{push_source}`: fresh rows offline and online (API key required); a thin handler over
`core.push.service.PushService`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from core.push.rows import PushError
from core.push.service import PushService
from service.auth import SECURITY, require_api_key
from service.errors import RequestError

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
        self,
        push_service: NamedDependency[PushService],
        push_source: FromPath[str],
        data: JSONBody[PushRequest],
    ) -> dict[str, Any]:
        """Validate every row first; on any fault nothing is written anywhere."""
        try:
            result = await push_service.push(push_source, data.rows)
        except PushError as exc:
            raise RequestError(str(exc)) from None
        return {
            "push_source": result.push_source,
            "view": result.view.name,
            "rows": result.rows,
            "written_online": result.written_online,
        }
