"""The status page in a real browser: Debian's Chromium, driven by Playwright (no browser download),
against a running daemon with two pipelines and basic auth."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ..broker import Broker, free_port, wait_for
from ..daemon import DaemonProcess, make_config, make_video
from ..timeouts import scaled
from .peers import get, require

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
LOADED = """() => {
  const imgs = [...document.querySelectorAll('.card img')];
  return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0 && !i.hidden);
}"""


def test_the_page_shows_every_pipeline_with_a_loaded_snapshot_and_no_console_error(
    tmp_path: Path, broker: Broker
) -> None:
    require(CHROMIUM, "chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (test extras)")
    video = make_video(tmp_path / "v.mp4", 40)
    (tmp_path / "users").write_text("installer:s3cret\n")
    http = free_port()
    pipelines = [
        {
            "name": "front",
            "model": "person",
            "source": {"type": "video", "path": str(video), "fps": 5, "loop": True},
        },
        {
            "name": "yard",
            "model": "person",
            "source": {"type": "synthetic", "width": 160, "height": 120, "fps": 5},
        },
    ]
    config = make_config(
        tmp_path,
        broker.port,
        video,
        pipelines=pipelines,
        http={"listen": f"127.0.0.1:{http}", "basic_auth_file": str(tmp_path / "users"), "refresh_s": 1},
    )
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    url = f"http://127.0.0.1:{http}/"
    auth = {"Authorization": "Basic " + base64.b64encode(b"installer:s3cret").decode()}
    try:
        assert wait_for(lambda: get(url + "api/status", auth)[0] == 200, 90), daemon.log()[-3000:]
        assert get(url + "api/status")[0] == 401  # no credentials, no data
        assert (
            get(url + "api/status", {"Authorization": "Basic " + base64.b64encode(b"installer:x").decode()})[
                0
            ]
            == 401
        )
        errors: list[str] = []
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
            context = browser.new_context(http_credentials={"username": "installer", "password": "s3cret"})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_function(LOADED, timeout=scaled(90) * 1000)
            names = page.locator(".card h2").all_inner_texts()
            assert sorted(names) == ["front", "yard"]
            assert "ssdlite_mobilenet_v2_person@1" in page.locator("#p-front .facts").inner_text()
            assert "connected" in page.locator("#mqtt").inner_text()
            page.wait_for_timeout(2500)  # a few refreshes: images replaced, no error on the way
            page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            browser.close()
        assert errors == []
        assert (tmp_path / "status-page.png").stat().st_size > 10_000
    finally:
        assert daemon.terminate() == 0
