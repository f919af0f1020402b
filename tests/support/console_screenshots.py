"""Screenshots of the console for docs/console/, taken in headless Chromium from a real `autoopt demo` run.

    AUTOOPT_HOME=/tmp/console-home python -m autooptimizer demo --json &      # a copy of a warm home
    PYTHONPATH=tests python tests/support/console_screenshots.py --home /tmp/console-home --out docs/console

While the demo runs it serves that home with `autoopt serve` (pointed at the demo's own Prometheus) and shoots the
overview during the fix cycle; once the demo is over it restarts Prometheus on the demo's stored series (for the
charts) and shoots the pages of its state, then, with Prometheus gone, sends one real goal through the chat in
staging (it pauses on training, whose cost nothing can confirm: a real pending approval) and shoots the chat, the
approvals, the traces and the audit log. PNGs are 1280 px wide, quantised to 256 colours.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

TOKEN = "screenshot-token-0d1e"
API = "/api/v1/optimizer"


def _demo_prometheus(home: Path) -> str | None:
    """The URL of the Prometheus the demo runs for `home` (from its command line), or None."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "prometheus" in line and f"--config.file={home}/stack/prometheus/" in line:
            found = re.search(r"--web.listen-address=(\S+)", line)
            if found:
                return f"http://{found.group(1)}"
    return None


def _serve(home: Path, prom: str, port: int, env: str = "dev") -> subprocess.Popen[bytes]:
    environ = {**os.environ, "AUTOOPT_HOME": str(home), "AUTOOPT_PROMETHEUS_URL": prom, "AUTOOPT_API_TOKEN": TOKEN,
               "AUTOOPT_THREADS": "1", "AUTOOPT_ENV": env}
    log = (home / "console-serve.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "autooptimizer", "serve", "--port", str(port)], env=environ,
                            stdout=log, stderr=log, start_new_session=True)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError("autoopt serve did not start; see console-serve.log")


def shoot(driver: Any, url: str, out: Path, height: int | None = None) -> None:
    """A full-page (or `height`-high) 1280 px screenshot, quantised to 256 colours."""
    from PIL import Image

    driver.set_window_size(1280, 800)
    driver.get(url)
    time.sleep(1.0)
    full = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, min(height or full, 5000))
    time.sleep(0.5)
    raw = out.with_suffix(".raw.png")
    driver.save_screenshot(str(raw))
    Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    raw.unlink()
    print(f"{out} {out.stat().st_size // 1024} KB")


def _sign_in(driver: Any, base: str) -> None:
    driver.get(f"{base}/ui/login")
    driver.find_element("css selector", "#token").send_keys(TOKEN)
    driver.find_element("css selector", "#name").send_keys("operator")
    driver.find_element("css selector", "#login").click()
    time.sleep(1.0)


def _prometheus_on_stored_series(home: Path, port: int) -> subprocess.Popen[bytes]:
    """The demo's Prometheus again, on its stored series (its scrape targets are gone: it only answers queries)."""
    data = home / "stack" / "prometheus"
    return subprocess.Popen(["prometheus", f"--config.file={data / 'prometheus.yml'}",
                             f"--storage.tsdb.path={data / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def live_phase(driver: Any, home: Path, out: Path, port: int) -> None:
    """During the demo: the overview while the fix cycle runs its A/B test; returns once the demo is over."""
    base = f"http://127.0.0.1:{port}"
    while (prom := _demo_prometheus(home)) is None:
        time.sleep(2)
    server = _serve(home, prom, port)
    try:
        while True:
            status = httpx.get(f"{base}{API}/status", timeout=30).json()
            if "ab_test" in [s["name"] for s in (status.get("current_cycle") or {}).get("steps", [])]:
                shoot(driver, f"{base}/ui", out / "overview-live.png", height=1250)
                break
            time.sleep(1)
        while _demo_prometheus(home) is not None or httpx.get(f"{base}{API}/status", timeout=30).json()["is_running"]:
            time.sleep(2)
    finally:
        server.terminate()
        server.wait(30)


def after_phase(driver: Any, home: Path, out: Path, port: int) -> None:
    """After the demo: every page over its state (charts from the stored series), then a chat in staging that
    pauses on training: with Prometheus gone the spend is unknown, so the PDP asks a human."""
    base = f"http://127.0.0.1:{port}"
    prometheus = _prometheus_on_stored_series(home, port + 1)
    server = _serve(home, f"http://127.0.0.1:{port + 1}", port)
    try:
        cycles = httpx.get(f"{base}{API}/history", timeout=30).json()["cycles"]
        fix = next(c for c in cycles if c["outcome"] == "promoted")
        rollback = next(c for c in cycles if c["outcome"] == "rolled_back")
        shoot(driver, f"{base}/ui", out / "overview.png")
        shoot(driver, f"{base}/ui/cycles/{fix['id']}", out / "cycle.png")
        shoot(driver, f"{base}/ui/cycles/{rollback['id']}", out / "cycle-rollback.png")
        shoot(driver, f"{base}/ui/models", out / "models.png")
    finally:
        server.terminate()
        prometheus.terminate()
        server.wait(30)
        prometheus.wait(30)
    server = _serve(home, f"http://127.0.0.1:{port + 1}", port)  # nothing listens there now
    try:
        _sign_in(driver, base)
        driver.get(f"{base}/ui/chat")
        driver.find_element("css selector", "#goal").send_keys("NDCG dropped, fix the reranker")
        driver.find_element("css selector", "#chat-env option[value='staging']").click()
        driver.find_element("css selector", "#send").click()
        for _ in range(600):
            if driver.find_elements("css selector", "#turns:not([data-status='running'])"):
                break
            time.sleep(1)
        chat_url = driver.current_url
        trace = driver.find_element("css selector", "#turns a[href^='/ui/traces/']").get_attribute("href")
        shoot(driver, chat_url, out / "chat.png")
        shoot(driver, f"{base}/ui/approvals", out / "approvals.png")
        shoot(driver, trace, out / "trace.png")
        shoot(driver, f"{base}/ui/traces", out / "traces.png")
        shoot(driver, f"{base}/ui/audit", out / "audit.png", height=1400)
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    from browser import chromium

    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/console"))
    parser.add_argument("--port", type=int, default=18801)
    parser.add_argument("--after-only", action="store_true", help="the demo already ran: skip the live overview")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with chromium() as driver:
        if not args.after_only:
            live_phase(driver, args.home.resolve(), args.out, args.port)
        after_phase(driver, args.home.resolve(), args.out, args.port)


if __name__ == "__main__":
    main()
