"""Pages and their assets, as package data: HTML shells (templates/), our CSS and JavaScript (static/), and the chart
library copied from node_modules at build (static/vendor/, by bin/web-assets).

A page is a shell without data: its script reads what it shows from JSON routes, so nothing a tenant sent is
ever part of the HTML. The shell names its assets by a version (a hash of their bytes), so an asset can be
cached for a year and a new deploy is fetched at once. Every page and asset is served with the security headers
of docs/api.md "Dashboards"; a page's own CSP allows nothing but this origin.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable

PACKAGE = "metering.web"
# Where bin/web-assets copies the vendored files, and which files a page may need from there.
VENDOR = "vendor"
VENDORED = ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE.txt")
ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PLACEHOLDER = re.compile(r"\{\{asset:([A-Za-z0-9._-]+)\}\}")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".txt": "text/plain", ".svg": "image/svg+xml"}
VERSION_LENGTH = 16

# Media types without their charset: the Functions runtime adds the response's (UTF-8).
HTML = "text/html"
ASSET_CACHE = "public, max-age=31536000, immutable"


class MissingAssets(RuntimeError):
    """The vendored assets were not copied into the package: the message says how to."""


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    body: bytes
    content_type: str
    version: str


def security_headers(frame_ancestors: str) -> dict[str, str]:
    """The headers of every page and asset: only this origin's scripts, styles, images and requests; framed only
    by `frame_ancestors`; no referrer; no type sniffing; never stored by a cache (assets set their own)."""
    return {
        "Content-Security-Policy": f"default-src 'self'; frame-ancestors {frame_ancestors}",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


class Pages:
    """The package's pages and assets, read once per process."""

    def __init__(self, root: Traversable | None = None) -> None:
        self.root = root or resources.files(PACKAGE)

    @cached_property
    def assets(self) -> dict[str, Asset]:
        found: dict[str, Asset] = {}
        static = self.root / "static"
        for folder in (static, static / VENDOR):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.is_file() and ASSET_NAME.fullmatch(entry.name) and not entry.name.startswith("."):
                    found[entry.name] = _asset(entry)
        return found

    def missing(self) -> list[str]:
        """The vendored assets that are not in the package (run bin/web-assets)."""
        return [name for name in VENDORED if name not in self.assets]

    def asset(self, name: str) -> Asset | None:
        return self.assets.get(name) if ASSET_NAME.fullmatch(name) else None

    def page(self, name: str, asset_base: str) -> bytes:
        """The page's HTML with each `{{asset:<name>}}` replaced by its versioned URL under `asset_base`.
        Raises MissingAssets when one is not there."""
        template = (self.root / "templates" / f"{name}.html").read_text(encoding="utf-8")
        absent = [found for found in _PLACEHOLDER.findall(template) if found not in self.assets]
        if absent:
            raise MissingAssets(
                f"the page's assets {', '.join(sorted(absent))} are not in the package: run bin/web-assets "
                "(it copies them from node_modules after npm ci) before serving or deploying"
            )

        def url(match: re.Match[str]) -> str:
            asset = self.assets[match.group(1)]
            return f"{asset_base}{asset.name}?v={asset.version}"

        return _PLACEHOLDER.sub(url, template).encode()


def _asset(entry: Traversable) -> Asset:
    body = entry.read_bytes()
    suffix = entry.name[entry.name.rfind(".") :]
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
    return Asset(entry.name, body, content_type, hashlib.sha256(body).hexdigest()[:VERSION_LENGTH])
