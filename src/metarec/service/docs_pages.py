"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc).

FastAPI's own pages load their scripts from a CDN by major version (``swagger-ui-dist@5``)
with no integrity hash. Those scripts run on the service's origin, where the page at
``/`` keeps a typed API key in localStorage: whoever could change the CDN's file could
read the key. Here each script and style sheet is pinned to one release and carries its
Subresource Integrity hash, so a browser runs only the bytes published in that npm
release (jsDelivr serves npm's files unchanged); the pages' content policy lets them
load nothing else from outside. FastAPI's third-party favicon and ReDoc's Google fonts
are left out: a visit need not be announced to either.

To move to a newer release: take its files from ``npm pack swagger-ui-dist@X`` (or
``redoc@X``) and write ``openssl dgst -sha384 -binary FILE | openssl base64 -A``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class PinnedAsset:
    url: str
    integrity: str  # "sha384-<base64>" of the file as npm publishes it


_JSDELIVR = "https://cdn.jsdelivr.net/npm"
SWAGGER_JS = PinnedAsset(
    f"{_JSDELIVR}/swagger-ui-dist@5.36.0/swagger-ui-bundle.js",
    "sha384-fUpRgC19yPykTqzdrUbdAg8NTiu16NEKf9U12J+IJWCg8/1mEI8f2+PEIz60Wyd+",
)
SWAGGER_CSS = PinnedAsset(
    f"{_JSDELIVR}/swagger-ui-dist@5.36.0/swagger-ui.css",
    "sha384-z/AtSaOHGn5MJ5auAHXUypohywlIWLBZo1jeGmhdpVIbCnFhxAH92cwdV41oyINc",
)
REDOC_JS = PinnedAsset(
    f"{_JSDELIVR}/redoc@2.5.4/bundles/redoc.standalone.js",
    "sha384-w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5",
)
PINNED_ASSETS = (SWAGGER_JS, SWAGGER_CSS, REDOC_JS)

# Inline script: Swagger UI's start-up call. Inline style and data: images: both UIs
# draw with them. cdn.redoc.ly: ReDoc's footer logo, an image (refused, it logged a
# violation and showed a broken image). blob: workers: ReDoc's search index runs in
# one. connect-src 'self': the schema and "Try it out" reach this server only.
DOCS_POLICY = (
    "default-src 'none'; "
    f"script-src {_JSDELIVR}/ 'unsafe-inline'; "
    f"style-src {_JSDELIVR}/ 'unsafe-inline'; "
    "img-src 'self' data: https://cdn.redoc.ly; font-src data:; worker-src blob:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _script(asset: PinnedAsset) -> str:
    return (
        f'<script src="{asset.url}" integrity="{asset.integrity}" crossorigin="anonymous"></script>'
    )


def _style(asset: PinnedAsset) -> str:
    return (
        f'<link rel="stylesheet" href="{asset.url}" integrity="{asset.integrity}" '
        'crossorigin="anonymous">'
    )


def _document(title: str, head: str, body: str) -> str:
    """One docs page: the shared head (charset, viewport, title) around ``head`` and
    ``body``."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
{head}
</head>
<body>
{body}
</body>
</html>
"""


def _unloaded(openapi_url: str, viewer: str, loaded: str) -> str:
    """What the page says where ``viewer`` did not load (no internet, a blocked CDN, a
    file that fails its integrity check): the page was blank, and only a script-less
    browser got the pointer to the schema. ``loaded``: the JS test that it did."""
    url = html.escape(openapi_url)
    return f"""<p id="unloaded" hidden style="font: 16px/1.5 sans-serif; margin: 2rem">
{viewer} could not be loaded from jsDelivr (offline, or blocked). The schema it
shows is at <a href="{url}">{url}</a>.</p>
<script>
if (!({loaded})) document.getElementById("unloaded").hidden = false;
</script>"""


def swagger_page(title: str, openapi_url: str) -> str:
    # validatorUrl null: Swagger UI would otherwise send the schema's URL to
    # validator.swagger.io for a badge
    start = f"""<script>
if (window.SwaggerUIBundle) window.ui = SwaggerUIBundle({{
  url: {_js_string(openapi_url)},
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}});
</script>"""
    unloaded = _unloaded(openapi_url, "Swagger UI", "window.SwaggerUIBundle")
    body = f'<div id="swagger-ui"></div>\n{_script(SWAGGER_JS)}\n{start}\n{unloaded}'
    return _document(f"{title} - Swagger UI", _style(SWAGGER_CSS), body)


def redoc_page(title: str, openapi_url: str) -> str:
    url = html.escape(openapi_url)
    body = (
        f"<noscript>ReDoc needs JavaScript; the schema itself is at {url}.</noscript>\n"
        f'<redoc spec-url="{url}"></redoc>\n{_script(REDOC_JS)}\n'
        + _unloaded(openapi_url, "ReDoc", "window.Redoc")
    )
    return _document(f"{title} - ReDoc", "<style>body { margin: 0; padding: 0; }</style>", body)


def _js_string(text: str) -> str:
    # a JSON string is a JS string; "</" escaped so it cannot end the script element
    return json.dumps(text).replace("</", "<\\/")
