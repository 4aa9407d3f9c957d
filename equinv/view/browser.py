"""Headless Chromium through Playwright, driving the system browser binary (nothing downloaded).

Used by ``equinv view --screenshot`` and by the browser tests. The binary is ``$EQUINV_CHROMIUM`` or the
first of ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH (Debian: ``apt-get install
chromium``); Playwright is the Python package only (never ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from equinv.errors import InputError

#: No sandbox (containers run as root), no GPU, and nothing that talks to the network on its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
BINARIES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None."""
    env = os.environ.get("EQUINV_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, BINARIES) if p), None)


def unavailable() -> str | None:
    """Why the browser cannot be driven here (a sentence), or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        where = os.environ.get("EQUINV_CHROMIUM") or "/".join(BINARIES)
        return f"no Chromium binary found ({where}; Debian: apt-get install chromium, or set EQUINV_CHROMIUM)"
    return None


@contextmanager
def launch() -> Iterator[object]:
    """A headless Chromium (Playwright ``Browser``) on the system binary; :class:`InputError` when unavailable."""
    why = unavailable()
    if why:
        raise InputError(f"cannot drive a browser: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(index: str | Path, width: int = 1280, height: int = 900,
              browser=None) -> Iterator[tuple[object, list[str]]]:
    """Open ``index`` (a file or an http URL) in ``browser`` (default: a new :func:`launch`); yields
    ``(page, problems)``.

    ``problems`` collects console errors, uncaught exceptions and every request that is neither
    ``file:`` nor ``data:`` nor to 127.0.0.1 (such requests are also blocked): a self-contained page
    leaves it empty. The page is ready when ``body[data-ready]`` is set; a page that fails to start
    (``#fatal`` shown) raises :class:`RuntimeError`.
    """
    if browser is None:
        with launch() as b, open_page(index, width, height, b) as opened:
            yield opened
        return
    url = str(index) if str(index).startswith("http") else Path(index).resolve().as_uri()
    problems: list[str] = []

    def route(r) -> None:
        if r.request.url.startswith(("file:", "data:", "http://127.0.0.1")):
            r.continue_()
        else:
            problems.append(f"network request: {r.request.url}")
            r.abort()

    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.route("**/*", route)
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready || !document.getElementById('fatal').hidden",
                               timeout=60_000)
        if not page.evaluate("document.body.dataset.ready"):
            raise RuntimeError(f"the page failed: {page.text_content('#fatal')}; {'; '.join(problems)}")
        yield page, problems
    finally:
        page.close()


def screenshot(index: str | Path, png: str | Path, landmark: int = 0, width: int = 1280, height: int = 820,
               browser=None) -> Path:
    """Open the page, pick reference landmark ``landmark`` and save a PNG of the window (palette-quantised
    when that makes it smaller)."""
    from PIL import Image

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with open_page(index, width, height, browser) as (page, problems):
        button = page.locator(f'#ref button.lm[data-k="{landmark}"]')
        if button.count():
            button.click()
        page.wait_for_timeout(200)
        page.screenshot(path=str(png))
    if problems:
        raise InputError(f"the page reported problems: {'; '.join(problems[:3])}", index)
    full = png.stat().st_size
    small = png.with_suffix(".tmp.png")
    Image.open(png).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(small, optimize=True)
    if small.stat().st_size < full:
        small.replace(png)
    else:
        small.unlink()
    return png
