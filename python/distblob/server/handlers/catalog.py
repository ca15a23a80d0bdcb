"""``GET /v2/_catalog``: the repository names, paged (distribution's ``catalog.go``)."""

from __future__ import annotations

import urllib.parse
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from distblob.server.errors import APIError
from distblob.server.handlers.base import Context, Resource, Target, int_param
from distblob.server.responses import json_response

#: Page size without ``n``, and the most one page may hold (distribution's defaults).
CATALOG_DEFAULT: Final = 100
CATALOG_MAX: Final = 1000


class Catalog:
    def __init__(self, context: Context) -> None:
        self.registry = context.registry
        self.maximum = context.catalog_max_entries

    async def get(self, request: Request) -> Response:
        """As distribution: an ``n`` above ``catalog.maxentries`` is PAGINATION_NUMBER_INVALID;
        without ``n``, 100 names, at most ``maxentries``."""
        n = int_param(request, "n")
        if n is not None and n > self.maximum:
            raise APIError("PAGINATION_NUMBER_INVALID", detail={"n": n})
        limit = min(CATALOG_DEFAULT if n is None else n, self.maximum)
        last = request.query_params.get("last")
        names = await self.registry.catalog(limit + 1, last)
        headers = {}
        if len(names) > limit:
            names = names[:limit]
            if names:
                query = urllib.parse.urlencode({"last": names[-1], "n": limit})  # Go sorts keys
                headers["Link"] = f'</v2/_catalog?{query}>; rel="next"'
        return json_response(200, {"repositories": names}, headers)


def resources(context: Context) -> list[Resource]:
    return [Resource("/v2/_catalog", {"GET": Catalog(context).get}, Target.CATALOG)]


__all__ = ["CATALOG_DEFAULT", "CATALOG_MAX", "Catalog", "resources"]
