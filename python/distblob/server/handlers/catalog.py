"""``GET /v2/_catalog``: the repository names, paged (distribution's ``catalog.go``)."""

from __future__ import annotations

import urllib.parse
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from distblob.server.handlers.base import Context, Resource, Target, int_param
from distblob.server.responses import json_response

#: Page size without ``n``, and the most one page may hold (distribution's defaults).
CATALOG_DEFAULT: Final = 100
CATALOG_MAX: Final = 1000


class Catalog:
    def __init__(self, context: Context) -> None:
        self.registry = context.registry

    async def get(self, request: Request) -> Response:
        n = int_param(request, "n")
        limit = CATALOG_DEFAULT if n is None else min(n, CATALOG_MAX)
        last = request.query_params.get("last")
        names = await self.registry.catalog(limit + 1, last)
        headers = {}
        if len(names) > limit:
            names = names[:limit]
            if names:
                query = urllib.parse.urlencode({"n": limit, "last": names[-1]})
                headers["Link"] = f'</v2/_catalog?{query}>; rel="next"'
        return json_response(200, {"repositories": names}, headers)


def resources(context: Context) -> list[Resource]:
    return [Resource("/v2/_catalog", {"GET": Catalog(context).get}, Target.CATALOG)]


__all__ = ["CATALOG_DEFAULT", "CATALOG_MAX", "Catalog", "resources"]
