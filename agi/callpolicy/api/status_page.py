"""The status page: /status (HTML) and /status.js, public and holding no data. The script asks
for an API token once (kept in the tab's sessionStorage), then reads /v1/overview with it
every REFRESH_MS and shows it; everything it shows is set as text (textContent), never as
HTML, since customer ids and dialled numbers come from outside.

The page's Content-Security-Policy allows only this origin's script and API: an injected
<script> or inline handler would not run even if some text did become markup."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

__all__ = ["REFRESH_MS", "router"]

router = APIRouter(tags=["status page"])

REFRESH_MS = 1000  # the page reads the overview again this long after the last answer
_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@cache
def _asset(name: str) -> bytes:
    return files(__package__).joinpath("static", name).read_bytes()


@router.api_route("/status", methods=["GET", "HEAD"], include_in_schema=False)
async def status_page() -> Response:
    return Response(_asset("status.html"), media_type="text/html; charset=utf-8",
                    headers=_HEADERS)


@router.api_route("/status.js", methods=["GET", "HEAD"], include_in_schema=False)
async def status_script() -> Response:
    script = _asset("status.js").replace(b"__REFRESH_MS__", str(REFRESH_MS).encode())
    return Response(script, media_type="text/javascript; charset=utf-8", headers=_HEADERS)
