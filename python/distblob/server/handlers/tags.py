"""``GET /v2/<name>/tags/list``: a repository's tags, paged (distribution's ``tags.go``)."""

from __future__ import annotations

import urllib.parse

from starlette.requests import Request
from starlette.responses import Response

from distblob.server.handlers.base import (
    Context,
    Resource,
    client_closed,
    int_param,
    unless_gone,
)
from distblob.server.responses import json_response


class Tags:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def get(self, request: Request) -> Response:
        repo = self.context.repository(request)
        n = int_param(request, "n")
        last = request.query_params.get("last")
        tags = await unless_gone(request, repo.manifests.tags)
        if tags is None:
            return client_closed()
        if last is not None:
            tags = [tag for tag in tags if tag > last]
        headers = {}
        if n is not None and len(tags) > n:
            tags = tags[:n]
            if tags:
                query = urllib.parse.urlencode({"n": n, "last": tags[-1]})
                headers["Link"] = f'</v2/{repo.name}/tags/list?{query}>; rel="next"'
        return json_response(200, {"name": repo.name, "tags": tags}, headers)


def resources(context: Context) -> list[Resource]:
    return [Resource("/v2/{name:path}/tags/list", {"GET": Tags(context).get})]


__all__ = ["Tags", "resources"]
