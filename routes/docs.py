"""The API's documentation, served offline: the OpenAPI document and Swagger UI, whose script,
stylesheet and icon come from the pinned `fastapi-offline` package, never from a CDN.

Every route here is an API route (kept out of the schema), so request metrics label it with
its path like any other endpoint.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

import services

router = APIRouter(include_in_schema=False)

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"

# The Swagger UI files `fastapi-offline` ships (swagger-ui-dist 5), by the name they are served at.
ASSET_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

# Swagger UI's OAuth2 password dialog always shows client_id, client_secret, where to send
# them, and a note on scopes; no option (`swagger_ui_parameters`, `init_oauth`) hides them.
# Logging in here needs only a username and a password, so these rules, appended to Swagger
# UI's stylesheet, hide the rest. Left empty, the client fields make Swagger UI send
# `Authorization: Basic Og==` (":"), which the login endpoint ignores.
HIDE_OAUTH2_CLIENT_FIELDS = """
/* Hypervisor: the login needs only username and password. */
.auth-container .wrapper:has(> label[for^="client_id_"]),
.auth-container .wrapper:has(> label[for^="client_secret_"]),
.auth-container .wrapper:has(> label[for="password_type"]),
.auth-container .scope-def { display: none; }
"""

SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "persistAuthorization": True,  # a reload keeps you logged in (until the token expires)
    "displayRequestDuration": True,
    "validatorUrl": None,  # no badge that would ask an online validator about the document
}


@lru_cache
def _asset(name: str) -> bytes:
    data = (files("fastapi_offline") / "static" / name).read_bytes()
    if name == "swagger-ui.css":
        data += HIDE_OAUTH2_CLIENT_FIELDS.encode()
    return data


@router.get(OPENAPI_URL)
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document of every endpoint."""
    return JSONResponse(request.app.openapi())


@router.get(DOCS_URL)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI, loading only files this service serves itself."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_URL,
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_URL,
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
    )


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page (unused by the password flow, served for parity)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(ASSETS_URL + "/{name}")
def swagger_ui_asset(name: str) -> Response:
    """One of Swagger UI's files."""
    media_type = ASSET_MEDIA_TYPES.get(name)
    if media_type is None:
        raise services.NotFound(f"no documentation asset '{name[:64]}'")
    return Response(_asset(name), media_type=media_type)
