"""Real-browser fixtures: a Streamlit server on a free port and a headless Chromium driven by Playwright.

``start_server`` / ``stop_server`` / ``launch_browser`` are plain functions so the browser benchmark
(bench/bench_browser.py) can reuse them without pytest.

Chromium is Debian's (/usr/bin/chromium; ``playwright install`` cannot download here). Without it the e2e
tests skip, unless SALIENCY_REQUIRE_BROWSER=1 (CI), where they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path(os.environ.get("SALIENCY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1600, "height": 1000}
HEALTH_TIMEOUT_S = 60.0


# ---------------------------------------------------------------------------------------------------------------
# Plain helpers (shared with the benchmark)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path
    log_file: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            self.log_file.flush()
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().decode().strip() == "ok"
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def start_server(port: int | None = None, timeout: float = HEALTH_TIMEOUT_S, log_name: str = "streamlit-server.log",
                 extra_env: dict[str, str] | None = None) -> Server:
    """Start ``streamlit run app.py`` in its own process group and wait for /_stcore/health to say "ok".

    The server's output goes to ``test-artifacts/<log_name>``. Raises RuntimeError (after stopping the process)
    if it exits early or is not healthy within ``timeout`` seconds.
    """
    port = port or free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / log_name
    log_file = open(log_path, "wb")  # closed by stop_server
    env = {**os.environ, "SALIENCY_OFFLINE": "1", "SALIENCY_THREADS": "1", "PYTHONUNBUFFERED": "1",
           **(extra_env or {})}
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(process, port, log_path, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_server(server)
            raise RuntimeError(f"streamlit exited with code {process.returncode} before it was healthy:\n"
                               f"{server.log_tail()}")
        if _healthy(server.url):
            return server
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"streamlit was not healthy on {server.url} within {timeout:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server, grace: float = 10.0) -> None:
    """Terminate the server's whole process group (SIGTERM, then SIGKILL after ``grace`` seconds)."""
    process = server.process
    try:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=grace)
    finally:
        server.log_file.close()


def browser_problem() -> str | None:
    """Why a browser cannot be launched here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"the playwright package is not importable ({exc})"
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (install Debian's chromium, or set SALIENCY_CHROMIUM)"
    return None


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def require_browser() -> None:
    """Skip the test (or fail it, when SALIENCY_REQUIRE_BROWSER=1) if no browser can be launched."""
    problem = browser_problem()
    if problem is None:
        return
    if os.environ.get("SALIENCY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SALIENCY_REQUIRE_BROWSER=1 but {problem}", pytrace=False)
    pytest.skip(f"e2e browser tests need Chromium: {problem}")


# ---------------------------------------------------------------------------------------------------------------
# Page helpers (shared with the benchmark)
# ---------------------------------------------------------------------------------------------------------------

APP = '[data-testid="stApp"]'
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
HEATMAP_TITLE = ".st-key-heatmap_chart .gtitle"

_WATCH_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (window.__stWatch) window.__stWatch.observer.disconnect();
  const watch = {started: false, finished: false, observer: null, t: {watch: performance.now()}};
  document.addEventListener('click', () => { watch.t.click = watch.t.click ?? performance.now(); },
                            {capture: true, once: true});
  watch.observer = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') !== 'notRunning') {
      watch.started = true;
      watch.t.started = watch.t.started ?? performance.now();
    } else if (watch.started && !watch.finished) {
      watch.finished = true;
      watch.t.finished = performance.now();
    }
  });
  watch.observer.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
  window.__stWatch = watch;
}"""


def wait_idle(page, timeout_ms: float = 120_000) -> None:
    """Wait until no script run is in progress (Streamlit's own ``data-test-script-state`` on stApp).

    Right after an interaction the rerun may not have started yet; pair this with a wait for the expected
    content, or use ``watch_run`` / ``wait_run`` to see a whole run go by.
    """
    page.locator(IDLE).wait_for(state="attached", timeout=timeout_ms)


def watch_run(page) -> None:
    """Start watching for the next script run; call it *before* the interaction that triggers the rerun."""
    page.evaluate(_WATCH_JS)


def wait_run(page, condition_js: str = "true", timeout_ms: float = 120_000) -> None:
    """Wait until a run started after ``watch_run`` has finished and ``condition_js`` (a JS expression) holds."""
    page.wait_for_function(
        f"() => window.__stWatch && window.__stWatch.finished && "
        f"document.querySelector('{IDLE}') !== null && ({condition_js})",
        timeout=timeout_ms, polling="raf",
    )


def run_timings(page) -> dict[str, float]:
    """Browser-side milliseconds of the last watched run: click → run started, run started → finished, and
    click → condition met (now)."""
    return page.evaluate("""() => {
        const t = window.__stWatch.t, now = performance.now(), click = t.click ?? t.watch;
        return {click_to_start_ms: t.started - click, run_ms: t.finished - t.started, click_to_done_ms: now - click};
    }""")


def keyed(key: str) -> str:
    """The CSS class Streamlit gives the container of a keyed element (unsafe characters become '-')."""
    return ".st-key-" + "".join(c if c.isalnum() or c in "_-" else "-" for c in key.strip())


def open_selectbox(page, key: str, text: str | None = None, attempts: int = 4):
    """Open a selectbox (a combobox), optionally type to filter; return its listbox locator.

    A script run that redraws the selectbox while it opens closes its list again (a loaded machine makes that
    likely), so the opening is tried again, each retry waiting for the app to be idle first (the first try does not
    wait: a test may choose mid-run, to interrupt it); the selectbox itself must be there every time."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError  # optional, as in browser_missing()

    box = page.locator(f"{keyed(key)} [role=combobox]")
    listbox = page.get_by_role("listbox")
    for attempt in range(attempts):
        if attempt:
            wait_idle(page)
        box.click()
        if text is not None:
            box.fill(text)
        try:
            listbox.wait_for(timeout=15_000)
            return listbox
        except PlaywrightTimeoutError:
            if attempt == attempts - 1:
                raise
            page.keyboard.press("Escape")
    return listbox


def choose(page, key: str, option, text: str | None = None) -> None:
    """Pick ``option`` (exact accessible name, or a compiled regex) in the selectbox ``key``."""
    listbox = open_selectbox(page, key, text)
    listbox.get_by_role("option", name=option, exact=isinstance(option, str)).click()


def heatmap_title(page) -> str:
    titles = page.locator(HEATMAP_TITLE)
    return titles.first.text_content() if titles.count() else ""


def screenshot(page, path: Path, max_height: int = 12_000) -> Path:
    """A screenshot of the whole app. Streamlit scrolls inside stMain, not the document, so ``full_page`` alone
    shows one viewport: grow the viewport to the content's height for the shot, then restore it."""
    size = page.viewport_size or VIEWPORT
    height = page.evaluate("""() => Math.max(...['[data-testid="stMain"]', '[data-testid="stSidebarContent"]']
        .map(s => document.querySelector(s)).filter(Boolean).map(e => e.scrollHeight), window.innerHeight)""")
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, max_height)})
    try:
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


def page_problems(page) -> list[str]:
    """Visible Streamlit exceptions and error alerts on the page, as text."""
    found = []
    for selector in ('[data-testid="stException"]', '[data-testid="stAlertContentError"]'):
        found += [f"{selector}: {t.strip()[:500]}" for t in page.locator(selector).all_inner_texts()]
    return found


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item so the page fixture can screenshot failures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def streamlit_server() -> Iterator[Server]:
    require_browser()  # no point starting a server nobody can look at
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def base_url(streamlit_server: Server) -> str:
    return streamlit_server.url


@pytest.fixture(scope="session")
def browser():
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_browser(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser, base_url, artifacts_dir, request, streamlit_server):
    """A fresh browser context (so a fresh Streamlit session) per test; a screenshot if the test fails."""
    with browser_page(browser, streamlit_server, artifacts_dir, request) as opened:
        yield opened


@contextlib.contextmanager
def browser_page(browser, server, artifacts_dir, request):
    """A fresh browser context on ``server`` (so a fresh Streamlit session); if the test failed, a screenshot and
    the server's log tail."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(60_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            try:
                screenshot(page, artifacts_dir / f"{request.node.name}-failure.png")
            except Exception as exc:  # noqa: BLE001 - a failed screenshot must not hide the real failure
                print(f"failure screenshot not saved: {exc}")
            print(f"--- streamlit log tail ---\n{server.log_tail()}")
        context.close()
