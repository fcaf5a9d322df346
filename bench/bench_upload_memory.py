"""The server's resident memory after big uploads (issue 17, item 1): N new browser sessions each upload a different
7000×7000 JPEG (about 1 MB, generated here, never committed), wait for the page to finish, and close; after the
sessions are gone the server (with its children) must be within 300 MB of where it started, for N = 3 and N = 10.

The start is measured after a warm-up session on a sample (the model loaded, the first explanation cached), so the
figure is what uploads cost, not what the first visitor costs. Closed sessions are dropped by Streamlit after
``server.disconnectedSessionTTL`` (120 s by default); the benchmark sets it to a few seconds so it need not wait
two minutes per round: what a closed session still holds after that is what this measures.

    .venv/bin/python bench/bench_upload_memory.py            # N = 3 and 10, exits 1 if a delta is over 300 MB
    .venv/bin/python bench/bench_upload_memory.py --rounds 3

Needs Debian's Chromium (/usr/bin/chromium) and playwright, as the e2e tests do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import (  # noqa: E402 - after the path is set
    keyed,
    launch_browser,
    start_server,
    stop_server,
    wait_idle,
)

SIDE = 7000
LIMIT_MB = 300
SESSION_TTL_S = 5
SETTLE_S = 20.0
LOAD_MS = 300_000


def big_jpeg(path: Path, seed: int, side: int = SIDE) -> Path:
    """A different side×side photo-like JPEG per seed, about 1 MB: smooth colour fields (upsampled noise) on a
    gradient, which JPEG compresses as it does a large photo with soft backgrounds."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    image = small.resize((side, side), Image.Resampling.BICUBIC)
    ramp = np.linspace(0, 60, side, dtype=np.float32)
    pixels = np.asarray(image, dtype=np.float32) * 0.75 + ramp[None, :, None]
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    image.save(path, format="JPEG", quality=85)
    return path


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children, in MB."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def session(browser, url: str, upload: Path | None) -> None:
    """One browser session: open the app, optionally upload ``upload``, wait for the page to finish, close."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        page.goto(url)
        page.locator('[data-testid="stSidebarNav"]').wait_for(timeout=LOAD_MS)
        page.locator(keyed("heatmap_chart")).wait_for(timeout=LOAD_MS)
        wait_idle(page, LOAD_MS)
        if upload is not None:
            page.locator(keyed("image_source")).get_by_role("radio", name="Upload").click()
            file_input = page.locator(f"{keyed('uploads')} input[type=file]")
            file_input.wait_for(state="attached")
            file_input.set_input_files(str(upload))
            page.locator(keyed("uploads")).get_by_text(upload.name).first.wait_for(timeout=LOAD_MS)
            page.locator(f"{keyed('heatmap_chart')} .gtitle").wait_for(timeout=LOAD_MS)
            time.sleep(1.0)  # the rerun of the upload starts after the chip is drawn
            wait_idle(page, LOAD_MS)
            page.locator(f"{keyed('heatmap_chart')} .gtitle").wait_for(timeout=LOAD_MS)
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, nargs="+", default=[3, 10], help="sessions per round (default 3 10)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        seed = 0
        for count in args.rounds:
            # a fresh server per round, so each round starts where a new server stands after one visitor
            server = start_server(log_name="bench-upload-memory.log",
                                  extra_env={"STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": str(SESSION_TTL_S)})
            try:
                session(browser, server.url, None)  # warm-up: the model loaded, a sample explained
                time.sleep(SETTLE_S)
                start = rss_mb(server.process.pid)
                peak = start
                for _ in range(count):
                    seed += 1
                    path = big_jpeg(Path(folder) / f"big-{seed}.jpg", seed)
                    session(browser, server.url, path)
                    peak = max(peak, rss_mb(server.process.pid))
                    path.unlink()
                time.sleep(SETTLE_S)
                end = rss_mb(server.process.pid)
            finally:
                stop_server(server)
            rows.append((count, start, peak, end))
            print(f"N={count}: start {start:.0f} MB, peak {peak:.0f} MB, end {end:.0f} MB", flush=True)
        browser.close()
    print(f"\n{SIDE}×{SIDE} JPEG uploads, one per new session, sessions closed (TTL {SESSION_TTL_S} s, "
          f"then {SETTLE_S:.0f} s):\n")
    print("| N | RSS start (MB) | RSS peak after a session (MB) | RSS end (MB) | delta (MB) |")
    print("|---|---|---|---|---|")
    failed = False
    for count, start, peak, end in rows:
        delta = end - start
        failed |= delta > LIMIT_MB
        print(f"| {count} | {start:.0f} | {peak:.0f} | {end:.0f} | {delta:+.0f} |")
    print(f"\n{'FAIL' if failed else 'OK'}: limit {LIMIT_MB} MB over the start")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
