"""``GET /v2/<name>/referrers/<digest>``: the OCI 1.1 referrers API, an image index of the
manifests whose ``subject`` is the digest (optionally of one ``artifactType``)."""

from __future__ import annotations

import json
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from distblob.server.handlers.base import Context, Resource, client_closed, unless_gone

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"


class Referrers:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def get(self, request: Request) -> Response:
        repo = self.context.repository(request)
        artifact_type = request.query_params.get("artifactType") or None
        digest = request.path_params["digest"]
        index = await unless_gone(request, lambda: repo.manifests.referrers(digest, artifact_type))
        if index is None:
            return client_closed()
        body = json.dumps(index, separators=(",", ":")).encode()
        headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else None
        return Response(body, 200, headers=headers, media_type=OCI_INDEX)


def resources(context: Context) -> list[Resource]:
    return [Resource("/v2/{name:path}/referrers/{digest}", {"GET": Referrers(context).get})]


__all__ = ["OCI_INDEX", "Referrers", "resources"]
