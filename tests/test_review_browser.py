"""The review site in a real browser: headless Chromium (Debian's package) driven over the
DevTools protocol opens the site from file://, renders it, draws a box on a face the detector
missed, exports corrections.json, and ``anonymize --corrections`` then blurs that region.

Chromium is installed with apt-get when it is missing and this runs as root (CI: a fresh Debian
machine); the test skips, saying why, only when that is not possible. Nothing else is
downloaded."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blurbeam import demo
from blurbeam.imageio import decode
from blurbeam.pipelines import anonymize as anon
from blurbeam.pipelines.cli import main as cli_main

websocket = pytest.importorskip("websocket", reason="websocket-client (the test extra) is needed")

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
]
#: Where the astronaut is pasted in the test picture, and its size (px wide).
PASTE = (220, 140, 200)


@pytest.fixture(scope="session")
def chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip("chromium is not installed and apt-get cannot install it (not root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            for cmd in (
                ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
            ):
                subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"apt-get could not install chromium: {exc}")
        if not os.path.exists(CHROMIUM):
            pytest.skip("apt-get ran but installed no /usr/bin/chromium")
    return CHROMIUM


class DevTools:
    """A minimal DevTools-protocol client over one browser websocket (flat sessions)."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg: dict = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, seconds: float = 60.0) -> dict:
        deadline = time.monotonic() + seconds
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} event")
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(chromium, tmp_path):
    profile = tempfile.mkdtemp(prefix="blurbeam-chromium-")
    proc = subprocess.Popen(
        [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = None
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stderr], [], [], 1.0)
        if ready:
            line = proc.stderr.readline()
            if "DevTools listening on " in line:
                url = line.split("DevTools listening on ", 1)[1].strip()
    if url is None:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail("chromium did not start its DevTools endpoint")
    cdp = DevTools(url)
    try:
        yield cdp
    finally:
        with contextlib.suppress(Exception):
            cdp.send("Browser.close")
        cdp.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(cdp: DevTools, session: str, url: str) -> None:
    cdp.send("Page.navigate", {"url": url}, session)
    cdp.wait_event("Page.loadEventFired")


def evaluate(cdp: DevTools, session: str, expression: str):
    result = cdp.send(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
    )
    if "exceptionDetails" in result:
        raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
    return result["result"].get("value")


def screenshot(cdp: DevTools, session: str) -> np.ndarray:
    shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB"))


def test_review_site_draw_export_and_rerun(browser, tmp_path):
    # a picture with a face; the detector's threshold is set so high that it finds none
    canvas = demo.background(640, 480, seed=3)
    x0, y0, size = PASTE
    demo.paste(canvas, demo.astronaut(), x0, y0, size)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(canvas).save(src / "missed.png")
    out = tmp_path / "out"
    base = ["anonymize", "--input", str(src), "--output", str(out), "--detector", "yunet"]
    base += ["--score-threshold", "1.0"]
    assert cli_main([*base, "--run-id", "first"]) == 0
    (first,) = anon.read_run_records(str(out), "first").to_pylist()
    assert first["status"] == "no_faces"  # the face is missed
    assert cli_main(["review", "--output", str(out)]) == 0

    cdp = browser
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    cdp.send("Page.enable", {}, session)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    cdp.send(
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(downloads), "eventsEnabled": True},
    )

    # the index renders: a screenshot that is not blank, the run and a sample card
    open_page(cdp, session, (out / "review" / "index.html").as_uri())
    pixels = screenshot(cdp, session)
    assert pixels.std() > 0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert "first" in evaluate(cdp, session, "document.body.innerText")
    assert evaluate(cdp, session, "document.querySelectorAll('svg.chart').length") == 2
    page = evaluate(cdp, session, "document.querySelector('.card a').href")
    assert page.startswith("file://")

    # the image page: wait for the image, then drag a box over the pasted face
    open_page(cdp, session, page)
    for _ in range(100):
        if evaluate(cdp, session, "document.getElementById('photo').complete"):
            break
        time.sleep(0.1)
    evaluate(cdp, session, "document.getElementById('stage').scrollIntoView()")
    rect = evaluate(
        cdp,
        session,
        "(() => { const r = document.getElementById('overlay').getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })()",
    )
    left, top, width, height = rect
    sx, sy = width / 640, height / 480
    box = (x0 + 20, y0 + 10, size - 40, size - 20)  # in source pixels
    start = (left + box[0] * sx, top + box[1] * sy)
    end = (left + (box[0] + box[2]) * sx, top + (box[1] + box[3]) * sy)
    mouse = {"button": "left", "clickCount": 1}
    cdp.send("Input.dispatchMouseEvent", {"type": "mousePressed", "x": start[0], "y": start[1], **mouse}, session)  # fmt: skip
    for t in (0.3, 0.7, 1.0):
        x, y = start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t
        cdp.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "left", "buttons": 1}, session)  # fmt: skip
    cdp.send("Input.dispatchMouseEvent", {"type": "mouseReleased", "x": end[0], "y": end[1], **mouse}, session)  # fmt: skip
    assert evaluate(cdp, session, "document.querySelectorAll('#overlay rect.reviewer').length") == 1
    evaluate(cdp, session, "document.getElementById('note').value = 'astronaut missed'")
    evaluate(cdp, session, "document.getElementById('note').dispatchEvent(new Event('input'))")

    # export: the page downloads corrections.json
    evaluate(cdp, session, "document.getElementById('export').click()")
    exported = downloads / "corrections.json"
    for _ in range(300):
        if exported.is_file() and exported.stat().st_size:
            break
        time.sleep(0.1)
    doc = json.loads(exported.read_text())
    (entry,) = doc["corrections"]
    assert entry["source_uri"] == first["source_uri"]
    assert entry["source_sha256"] == first["source_sha256"]
    assert entry["note"] == "astronaut missed"
    (drawn,) = entry["missed_faces"]
    # the box is in the source image's pixel frame, whatever size the page showed it at
    tol = 2 / min(sx, sy) + 1
    for got, want in zip((drawn["x"], drawn["y"], drawn["w"], drawn["h"]), box, strict=True):
        assert abs(got - want) <= tol

    # the corrected run blurs the drawn region and records the box as the reviewer's
    assert cli_main([*base, "--run-id", "fixed", "--corrections", str(exported)]) == 0
    (fixed,) = anon.read_run_records(str(out), "fixed").to_pylist()
    assert fixed["status"] == "ok" and [f["source"] for f in fixed["faces"]] == ["reviewer"]
    after = decode(Path(fixed["output_uri"]).read_bytes()).pixels.astype(int)
    cx, cy = box[0] + box[2] // 4, box[1] + box[3] // 4
    region = (slice(cy, cy + box[3] // 2), slice(cx, cx + box[2] // 2))
    changed = (np.abs(after[region] - canvas[region].astype(int)).max(axis=2) > 2).mean()
    assert changed > 0.5
    assert np.array_equal(after[:, :100], canvas[:, :100])  # far from the box: untouched
