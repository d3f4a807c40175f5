"""``/docs`` (Swagger UI) and ``/redoc``: the API's documentation pages, outside the OpenAPI document.

Their assets are of exact versions from the jsDelivr CDN, each checked by its Subresource Integrity hash, so a
changed file on the CDN is not run. The app is created with ``docs_url=None, redoc_url=None``: these replace
FastAPI's own pages.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

router = APIRouter()

SWAGGER_UI_VERSION = "5.32.0"
REDOC_VERSION = "2.5.2"
_CDN = "https://cdn.jsdelivr.net/npm"
#: each asset's URL and its SHA-384 (computed from the npm package of that version, which the CDN serves)
ASSETS = {
    f"{_CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui-bundle.js": (
        "sha384-7xcoc6ZKDFF7Ek627QTC3Bg/K+5Y36NJ8MWAE43D2m6+3Sh9XO3tdsfHhrS8gNIQ"
    ),
    f"{_CDN}/swagger-ui-dist@{SWAGGER_UI_VERSION}/swagger-ui.css": (
        "sha384-3nuX7df3EaAoiqLBeyS1Ola0Gpg9ryJKVtarubwfnA1cOH8AWHUdbPSIvEqPZ9VH"
    ),
    f"{_CDN}/redoc@{REDOC_VERSION}/bundles/redoc.standalone.js": (
        "sha384-70P5pmIdaQdVbxvjhrcTDv1uKcKqalZ3OHi7S2J+uzDl0PW8dO6L+pHOpm9EEjGJ"
    ),
}
SWAGGER_JS, SWAGGER_CSS, REDOC_JS = ASSETS
#: no favicon from a third party: the browser asks this server, which answers 404
FAVICON = "/favicon.ico"


def _with_integrity(page: Response) -> Response:
    html = bytes(page.body).decode()
    for url, digest in ASSETS.items():
        checked = f'"{url}" integrity="{digest}" crossorigin="anonymous" referrerpolicy="no-referrer"'
        html = html.replace(f'"{url}"', checked)
    return Response(html, media_type="text/html")


async def swagger(request: Request) -> Response:
    page = get_swagger_ui_html(
        openapi_url=str(request.app.openapi_url),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS,
        swagger_favicon_url=FAVICON,
    )
    return _with_integrity(page)


async def redoc(request: Request) -> Response:
    page = get_redoc_html(
        openapi_url=str(request.app.openapi_url),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=REDOC_JS,
        redoc_favicon_url=FAVICON,
        with_google_fonts=False,
    )
    return _with_integrity(page)


# Plain routes (GET and HEAD), not API operations: the pages are not part of the document they show.
router.add_route("/docs", swagger, include_in_schema=False)
router.add_route("/redoc", redoc, include_in_schema=False)
