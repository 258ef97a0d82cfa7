"""End to end in headless Debian Chromium (Playwright driving /usr/bin/chromium): sign in, edit a scene,
see the validation error next to the field, fix it, preview, save. Screenshots are kept for a look."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request

import pytest
import yaml

from core.settings import REPO_ROOT
from tests.configcenter.test_app import TOKEN, build
from tests.conftest import free_port_block

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
SHOTS = REPO_ROOT / "var" / "screenshots"


@pytest.fixture()
def server(tmp_path):
    """`hermes ui` as a real process on a free port, over a copy of conf/ and the fake nightly of test_app."""
    made = build(tmp_path)
    conf = made["conf"]
    port = free_port_block((0,))
    env = {**os.environ, "HERMES_HOME": str(made["settings"].home), "HERMES_CONF": str(conf), "HERMES_UI_TOKEN": TOKEN,
           "HERMES_UI_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "ui"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    seen = []
    for line in proc.stderr:                   # uvicorn says when it listens; EOF means it died
        seen.append(line)
        if "Uvicorn running on" in line:
            break
    assert proc.poll() is None, "".join(seen)
    assert urllib.request.urlopen(f"{url}/login", timeout=5).status == 200
    yield {"url": url, "conf": conf}
    proc.terminate()
    proc.wait(timeout=30)


def test_operator_signs_in_edits_sees_the_error_fixes_previews_and_saves(server):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "Debian chromium is required (.ci/run installs it)"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(server["url"] + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#scenes")
        assert page.locator("#scenes").inner_text().count("enabled") >= 8
        page.screenshot(path=str(SHOTS / "1-scene-list.png"), full_page=True)

        page.click("a[href='/scenes/hot_items']")
        page.fill("#audience", "n_app_open_28d >= 1 and income > 3")
        page.click("#preview-button")
        error = page.wait_for_selector("#error-audience")
        assert "unknown feature 'income'" in error.inner_text()
        page.screenshot(path=str(SHOTS / "2-edit-with-error.png"), full_page=True)

        page.fill("#audience", "n_app_open_28d >= 2")
        page.fill("#priority", "12")
        page.click("#preview-button")
        page.wait_for_selector("#preview")
        assert page.locator("#message").inner_text() == "valid"
        page.screenshot(path=str(SHOTS / "3-preview.png"), full_page=True)

        page.click("#save-button")
        page.wait_for_selector("#message.ok")
        assert page.locator("#message").inner_text().startswith("saved; config version cfg-")
        browser.close()
    saved = yaml.safe_load((server["conf"] / "scenes" / "hot_items.yaml").read_text())
    assert saved["audience"] == "n_app_open_28d >= 2" and saved["priority"] == 12
    assert saved["enabled"] is True          # untouched fields keep their meaning (enabled was a default)
