"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` package)
driven by Playwright against a server on loopback.

Without Chromium or Playwright this test fails (CI installs both, see ``.ci/run``);
set ``SOUNDWATCH_SKIP_BROWSER=1`` to skip it on purpose. The screenshot is written to
the test's tmp folder and, when ``SOUNDWATCH_TEST_ARTEFACTS`` names a folder, there too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from serve_helpers import make_service, running_server, train_small_model

CHROMIUM = os.environ.get("SOUNDWATCH_CHROMIUM", "/usr/bin/chromium")
SKIP_ENV = "SOUNDWATCH_SKIP_BROWSER"
ARTEFACTS_ENV = "SOUNDWATCH_TEST_ARTEFACTS"


def _playwright():
    """Playwright's sync API, or a failure that says what to install."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"browser test skipped on purpose ({SKIP_ENV}=1)")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (or set "
            f"SOUNDWATCH_CHROMIUM, or {SKIP_ENV}=1 to skip this test)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed: pip install playwright (or {SKIP_ENV}=1)")
    return sync_playwright


def _post(base: str, clip: Path) -> dict:
    response = httpx.post(
        f"{base}/v1/score",
        files={"file": (clip.name, clip.read_bytes(), "audio/wav")},
        data={"machine": "slider", "store": "true"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_dashboard_shows_new_scores_and_alerts_live(tmp_path):
    sync_playwright = _playwright()
    model, test_folder = train_small_model(tmp_path / "model")
    normal = sorted(test_folder.glob("normal_*.wav"))
    anomalies = sorted(test_folder.glob("anomaly_*.wav"))
    service = make_service(model, tmp_path / "events.db")  # alert rule: 2 of the last 3
    shot = tmp_path / "dashboard.png"
    with running_server(service) as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{base}/dashboard/#interval=0.5")
            panel = page.locator('section.panel[data-machine="slider"]')
            panel.wait_for(timeout=20_000)
            assert panel.locator("svg.timeline").get_attribute("data-points") == "0"
            # A marker that a reload would wipe.
            page.evaluate("window.__notReloaded = true")

            first = _post(base, normal[0])
            page.wait_for_selector(
                'section[data-machine="slider"] svg.timeline[data-points="1"]', timeout=20_000
            )
            last = panel.locator('[data-role="last"]')
            assert float(last.get_attribute("data-score")) == pytest.approx(first["score"])
            assert panel.locator("svg circle").count() == 1
            assert panel.locator("svg polyline.threshold").count() == 1
            assert not panel.locator(".badge").is_visible()

            decisions = [_post(base, clip)["decision"] for clip in anomalies]
            assert sum(decisions) >= 2  # the seeded synthetic anomalies are loud
            page.wait_for_selector('section[data-machine="slider"] .alerts li.open', timeout=20_000)
            page.wait_for_selector(
                f'section[data-machine="slider"] svg.timeline[data-points="{1 + len(anomalies)}"]',
                timeout=20_000,
            )
            assert panel.locator(".badge").is_visible()
            assert "anomalous" in panel.locator(".alerts li.open").first.inner_text()
            assert page.locator("#open-alerts").inner_text() == "1 open alert(s)"
            assert panel.locator("svg circle.point-1").count() == sum(decisions)
            # The last clip's log-mel, drawn by the server, is on the page.
            page.wait_for_function(
                "() => { const i = document.querySelector("
                "'section[data-machine=\"slider\"] figure img');"
                " return i && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            assert "log-mel" in panel.locator("figcaption").inner_text()
            # Polls since then (they ask again for the last seconds) added no duplicate.
            timeline = panel.locator("svg.timeline")
            assert timeline.get_attribute("data-points") == str(1 + len(anomalies))
            assert page.evaluate("window.__notReloaded") is True
            assert errors == []
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get(ARTEFACTS_ENV):
        folder = Path(os.environ[ARTEFACTS_ENV])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, folder / shot.name)
    print(f"dashboard screenshot: {shot}")


def test_last_clip_picture_has_the_anomaly_map_when_the_detector_gives_one(tmp_path):
    import numpy as np
    from serve_helpers import wav_bytes

    from soundwatch.features.logmel import LogMelConfig
    from soundwatch.services.server_figures import clip_png

    class Localising:
        """Stands in for a neural detector: log-mel settings and a map."""

        def logmel_config(self) -> LogMelConfig:
            return LogMelConfig()

        def anomaly_map(self, clip) -> np.ndarray:
            return np.random.default_rng(0).random((128, 32))

    y = np.random.default_rng(1).normal(0, 0.1, 16000).astype(np.float32)
    with_map, has_map = clip_png(wav_bytes(y), "normal_id_00_x.wav", Localising())
    without, no_map = clip_png(wav_bytes(y), "normal_id_00_x.wav", None)
    assert has_map and not no_map
    assert with_map.startswith(b"\x89PNG") and without.startswith(b"\x89PNG")
    width = int.from_bytes(with_map[16:20], "big")
    assert width > int.from_bytes(without[16:20], "big")  # two panels side by side
