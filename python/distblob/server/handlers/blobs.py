"""``/v2/<name>/blobs/<digest>``: GET and HEAD a blob, DELETE its link (distribution's
``blob.go``). The registry plans the answer (:class:`~distblob.interfaces.ServePlan`);
:func:`~distblob.server.responses.plan_response` sends it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from distblob.descriptor import Descriptor
from distblob.server.handlers.base import Context, Resource, client_closed, unless_gone
from distblob.server.responses import empty, plan_response


class Blobs:
    def __init__(self, context: Context) -> None:
        self.context = context

    async def get(self, request: Request) -> Response:
        """GET and HEAD: Range, If-None-Match and redirects are the plan's."""
        repo = self.context.repository(request)
        digest = request.path_params["digest"]
        headers = request.headers
        plan = await unless_gone(
            request,
            lambda: repo.blobs.serve_blob(
                digest,
                method=request.method,
                range=headers.get("range"),
                if_none_match=headers.get("if-none-match"),
            ),
        )
        if plan is None:
            return client_closed()
        notifier = self.context.notifier
        if notifier is not None and plan.status < 400:  # HEAD, 304 and 307 too, as in Go
            length = plan.headers.get("Content-Length", "")
            found = plan.descriptor or Descriptor(
                size=int(length) if length.isdigit() else 0, digest=digest
            )
            notifier.blob_pulled(request, repo.name, found)
        return plan_response(plan)

    async def delete(self, request: Request) -> Response:
        repo = self.context.repository(request)
        await repo.blobs.delete(request.path_params["digest"])
        if self.context.notifier is not None:
            self.context.notifier.deleted(request, repo.name, digest=request.path_params["digest"])
        return empty(202)


def resources(context: Context) -> list[Resource]:
    blobs = Blobs(context)
    path = "/v2/{name:path}/blobs/{digest}"
    return [Resource(path, {"GET": blobs.get, "HEAD": blobs.get, "DELETE": blobs.delete})]


__all__ = ["Blobs", "resources"]
