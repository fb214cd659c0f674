"""Pages in a real headless Chromium, for the portal's tests and the console's after them: the system's chromium
driven by Playwright (which downloads no browser), a page that records every request it makes and every console
message, and a local server of embedding pages (another origin than the dev host's).

The browser is found at METERING_CHROMIUM, else `chromium` or `chromium-browser` on the PATH. Without one the
browser tests are skipped with what to install, except under CI, where a missing browser fails them: bin/setup
installs it there.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

# Chromium's own traffic (component updates, safe browsing, sync, field trials) off: the only requests are the
# page's, so a test can say that none leaves this machine.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})


def chromium_path() -> str | None:
    return os.environ.get("METERING_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def launch() -> Iterator[object]:
    """One Chromium for the session (each test opens its own context, so none shares cookies or storage)."""
    executable = chromium_path()
    if executable is None:
        message = (
            "no Chromium: install Debian's or Ubuntu's chromium package (bin/setup does as root) or set "
            "METERING_CHROMIUM to a Chromium binary"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 (only for the browser tests)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page with what it did: every request's URL, every console message, every dialog (alert, confirm)."""

    page: object
    requests: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urlsplit(url).hostname or url for url in self.requests if not url.startswith(("blob:", "data:"))}

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"]


def watch(page: object) -> Watched:
    watched = Watched(page)
    page.on("request", lambda request: watched.requests.append(request.url))  # type: ignore[attr-defined]
    page.on("console", lambda message: watched.console.append((message.type, message.text)))  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: watched.errors.append(str(error)))  # type: ignore[attr-defined]

    def on_dialog(dialog: object) -> None:
        watched.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)  # type: ignore[attr-defined]
    return watched


@contextmanager
def embedding_server(host: str) -> Iterator[EmbeddingServer]:
    """An HTTP server on `host` (a free port) serving pages set by the test: a SaaS's page that embeds the
    portal in an iframe, from an origin of its own."""
    server = EmbeddingServer(host)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


class EmbeddingServer:
    def __init__(self, host: str) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.host = host

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.httpd.server_address[1]}{path}"
