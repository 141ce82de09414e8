"""[branding]: the operator's name, logo, colour and footer on every gateway page.

The name and footer are template globals (app.py). The logo and the accent
colour are served as files of our own, `{prefix}/branding/logo` and
`{prefix}/branding.css`, because the pages' CSP admits no inline style and
no image from elsewhere. The logo is read once, when the config is; the
stylesheet is made once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from ..config import BrandingConfig
from ..policy.branding import accent_stylesheet
from .exchange import exchange


@dataclass(frozen=True)
class Assets:
    logo: bytes  # empty: the built-in mark
    logo_type: str
    stylesheet: str  # empty: the built-in colours


ASSETS = web.AppKey("branding_assets", Assets)


def assets(branding: BrandingConfig) -> Assets:
    """The logo as config read and checked it, and the accent made into a stylesheet."""
    css = accent_stylesheet(branding.accent_color) if branding.accent_color else ""
    return Assets(branding.logo_data, branding.logo_type, css)


def template_globals(branding: BrandingConfig, prefix: str) -> dict[str, str]:
    return {
        "product_name": branding.name,
        "footer": branding.footer,
        "logo_url": f"{prefix}/branding/logo" if branding.logo else "",
        "brand_css_url": f"{prefix}/branding.css" if branding.accent_color else "",
    }


async def stylesheet(request: web.Request) -> web.Response:
    found = request.app[ASSETS]
    if not found.stylesheet:
        raise web.HTTPNotFound()
    exchange(request).gateway_page = True
    return web.Response(text=found.stylesheet, content_type="text/css")


async def logo(request: web.Request) -> web.Response:
    found = request.app[ASSETS]
    if not found.logo:
        raise web.HTTPNotFound()
    exchange(request).gateway_page = True
    response = web.Response(body=found.logo, content_type=found.logo_type)
    # An SVG opened on its own is a document: no script, no outside fetch, sandboxed.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    )
    return response
