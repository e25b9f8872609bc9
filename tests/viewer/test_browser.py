"""``nerfxl view`` as a person uses it: a real server process, a real (headless) Chromium page.

One tiny run is trained once; one server and one browser page are shared by the tests, which run in
file order: the first frame arrives and is refined, the picture is not blank, the "Tile boxes" overlay
toggles, a mouse drag renders a new view. The server's HTTP side must serve the page and nothing of the
run folder or the file system; a non-loopback --host needs --allow-remote.

The browser tests skip (with the reason) only when Chromium or playwright is missing; anything else
that goes wrong with the viewer fails. Screenshots are kept in $NERFXL_TEST_ARTIFACTS, else in
test-artifacts/viewer/ at the repository root.
"""

from __future__ import annotations

import http.client
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from child_process import default_sigint

ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 800, "height": 500}
# Left of the GUI panel (which starts near x = 465), above the axes gizmo (bottom left, about 60 px high).
RENDER_CROP = (slice(0, 430), slice(0, 440))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader"]
WAIT_MS = 120_000  # generous: another job may be sharing the two cores
FRAME_TEXT = ("() => [...document.querySelectorAll('input')].map(i => i.value)"
              ".find(v => /frame \\d+/.test(v || '')) || ''")


# ---------------------------------------------------------------------------------------------- helpers
def nerfxl(*args: str) -> list[str]:
    return [sys.executable, "-m", "nerfxl.cli", *args]


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("NERFXL_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "viewer")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_artifact(name: str, png: bytes) -> None:
    (artifacts_dir() / name).write_bytes(png)


def pixels(png: bytes) -> np.ndarray:
    """The render area of a screenshot, [H, W, 3] float."""
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    return image[RENDER_CROP]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def frame_text(page) -> str:
    return page.evaluate(FRAME_TEXT)


def frame_number(page) -> int:
    match = re.search(r"frame (\d+)", frame_text(page))
    return int(match.group(1)) if match else 0


def wait_for_frame_text(page, pattern: str, what: str) -> str:
    """Wait until the Frame text matches the JavaScript regex ``pattern``; fail with what it shows."""
    script = ("(p) => [...document.querySelectorAll('input')].some(i => new RegExp(p).test(i.value || ''))")
    try:
        page.wait_for_function(script, arg=pattern, timeout=WAIT_MS)
    except Exception as e:  # playwright's TimeoutError: say what the page showed instead
        pytest.fail(f"{what}: the Frame text never matched /{pattern}/ in {WAIT_MS / 1000:.0f} s "
                    f"(it shows {frame_text(page)!r}): {e}")
    return frame_text(page)


def wait_until_settled(page, quiet_s: float = 1.5) -> str:
    """Wait for a finished refined frame after which nothing new is rendered for ``quiet_s``."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        text = wait_for_frame_text(page, r"^refined .*frame \d+", "refined frame")
        time.sleep(quiet_s)
        if frame_text(page) == text:
            return text
    pytest.fail(f"the viewer never came to rest (Frame text: {frame_text(page)!r})")


def wait_for_picture(page, predicate, what: str, describe=None, timeout_s: float = 30.0) -> bytes:
    """Screenshots until ``predicate(render pixels)`` holds (the page redraws asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        png = page.screenshot()
        if predicate(pixels(png)):
            return png
        if time.monotonic() > deadline:
            save_artifact(f"failed-{what.replace(' ', '-')}.png", png)
            details = f": {describe(pixels(png))}" if describe else ""
            pytest.fail(f"{what}: the picture did not change as expected within {timeout_s:.0f} s{details} "
                        f"(Frame text {frame_text(page)!r}; screenshot saved in {artifacts_dir()})")
        time.sleep(0.25)


def colourful(image: np.ndarray) -> float:
    """Fraction of coloured pixels: the tile-box lines (light blue, salmon; the young model renders a
    greyish purple, max - min of its channels about 20)."""
    return float(((image.max(-1) - image.min(-1)) > 30).mean())


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained_run(tiny_city, tmp_path_factory) -> Path:
    """A tiny two-tile run, trained once for this module."""
    out = tmp_path_factory.mktemp("viewer-run")
    result = subprocess.run(nerfxl("train", "tiny", "--data", str(tiny_city), "--steps", "40", "--partitions", "2",
                                   "--output", str(out), "--no-progress"),
                            capture_output=True, text=True, timeout=600, cwd=out)
    assert result.returncode == 0, f"training failed:\n{result.stdout}\n{result.stderr}"
    match = re.search(r"^run folder: (.+)$", result.stdout, re.M)
    assert match, f"no 'run folder:' line in:\n{result.stdout}"
    run = Path(match.group(1).strip())
    assert (run / "config.yaml").is_file(), sorted(p.name for p in run.iterdir())
    return run


class ServerProcess:
    """``nerfxl view`` in a child process; a thread drains its output (so the pipe never fills)."""

    def __init__(self, run: Path, cwd: Path):
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready = threading.Event()
        self.proc = subprocess.Popen(nerfxl("view", str(run), "--port", str(free_port()), "--resolution", "160"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     cwd=cwd, preexec_fn=default_sigint)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.match(r"nerfxl viewer: (http://\S+)", line)
            if match and self.url is None:
                self.url = match.group(1)
                self.ready.set()
        self.ready.set()  # the process ended (its log says why)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        """Ctrl-C, then (if it hangs) kill; returns the exit code of the Ctrl-C, or fails."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
                pytest.fail(f"nerfxl view did not exit within 30 s of Ctrl-C; log:\n{self.log}")
        return self.proc.returncode


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained_run):
    """A running ``nerfxl view RUN --resolution 160``; stopped with Ctrl-C afterwards (it must exit cleanly)."""
    viewer = ServerProcess(trained_run, cwd=trained_run)  # the worst case for a server of static files
    try:
        if not viewer.ready.wait(timeout=60) or viewer.url is None:
            pytest.fail(f"nerfxl view printed no 'nerfxl viewer:' line within 60 s "
                        f"(exit code {viewer.proc.poll()}); log:\n{viewer.log}")
        yield viewer
    finally:
        code = viewer.stop()
        viewer.reader.join(timeout=10)
    assert viewer.proc.returncode is not None
    assert "Traceback" not in viewer.log, viewer.log
    assert code in (0, 130), f"nerfxl view exited with {code} on Ctrl-C; log:\n{viewer.log}"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, or skip (never downloads a browser)."""
    path = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
    if path is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (see .ci/run)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    return path


@pytest.fixture(scope="module")
def page(chromium, server):
    """One browser tab on the viewer, shared by the browser tests (in file order)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.goto(server.url, timeout=WAIT_MS)
            yield tab
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------- browser
def test_page_shows_a_refined_frame(page):
    first = wait_for_frame_text(page, r"frame \d+", "first frame")
    assert re.match(r"(coarse|refined) \d+×\d+ in \d+ ms · frame \d+$", first), first
    refined = wait_for_frame_text(page, r"^refined ", "refined frame")
    assert re.match(r"refined 160×\d+ in \d+ ms · frame \d+$", refined), refined  # --resolution 160
    # A person closes the "software WebGL" notice if Chromium shows one; it covers part of the picture.
    close = page.locator(".mantine-Notification-closeButton")
    for i in range(close.count()):
        close.nth(i).click()
    wait_until_settled(page)
    png = page.screenshot()
    save_artifact("01-refined.png", png)
    image = pixels(png)
    # Not the empty page: viser's background is near-white until a frame covers it.
    white = float((image.min(-1) > 235).mean())
    assert white < 0.2, f"{white:.0%} of the render area is white: no rendered frame is shown"
    assert image.std() > 4.0, f"the render area is nearly flat (std {image.std():.2f})"
    colours = len(np.unique(image.astype(np.uint8).reshape(-1, 3), axis=0))
    assert colours > 50, f"only {colours} distinct colours in the render area"


def test_tile_boxes_overlay_toggles(page):
    texts = [wait_until_settled(page)]
    box = page.get_by_label("Tile boxes", exact=True)
    assert box.is_checked(), "the Tile boxes overlay should be on by default"
    png = page.screenshot()
    save_artifact("02-tile-boxes-on.png", png)
    with_boxes = pixels(png)
    lines = colourful(with_boxes)
    assert lines > 0.002, f"no coloured tile-box lines are visible ({lines:.2%} coloured pixels)"

    page.get_by_text("Tile boxes", exact=True).click()  # the label, as a person clicks it
    assert not box.is_checked()
    png = wait_for_picture(page, lambda im: colourful(im) < 0.2 * lines, "tile boxes hidden",
                           lambda im: f"{colourful(im):.2%} coloured pixels, {lines:.2%} with the boxes")
    texts.append(frame_text(page))
    save_artifact("03-tile-boxes-off.png", png)
    without = pixels(png)
    hidden = difference(without, with_boxes)
    assert hidden > 0.3, f"hiding the tile boxes barely changed the picture ({hidden:.2f}; frames {texts})"
    # The rendered image alone (no overlay) is no flat colour: the model is drawn.
    assert without.std() > 2.0, f"with the overlay off the render is flat (std {without.std():.2f})"
    assert (without.min(-1) > 235).mean() < 0.2, "with the overlay off the render area is white"

    page.get_by_text("Tile boxes", exact=True).click()
    assert box.is_checked()
    # Back to the first picture: the same lines over the same frame (up to anti-aliasing, should the
    # same view have been rendered again meanwhile).
    png = wait_for_picture(page, lambda im: colourful(im) > 0.7 * lines and difference(im, with_boxes) < 0.4 * hidden,
                           "tile boxes shown again",
                           lambda im: f"{colourful(im):.2%} coloured pixels ({lines:.2%} at first), difference "
                                      f"{difference(im, with_boxes):.2f} to the first picture, {hidden:.2f} hidden")
    texts.append(frame_text(page))
    save_artifact("04-tile-boxes-on-again.png", png)
    assert texts[0] == texts[-1], f"toggling an overlay re-rendered the frame: {texts}"


def test_camera_drag_renders_a_new_view(page):
    before_text = wait_until_settled(page)
    before_n = frame_number(page)
    before = pixels(page.screenshot())
    page.mouse.move(150, 300)  # left of the panel, below the notice
    page.mouse.down()
    page.mouse.move(350, 340, steps=10)
    page.mouse.up()
    try:
        page.wait_for_function(f"() => {{ const t = ({FRAME_TEXT})(); const m = /frame (\\d+)/.exec(t); "
                               f"return m && +m[1] > {before_n}; }}", timeout=WAIT_MS)
    except Exception as e:
        pytest.fail(f"dragging the camera rendered no new frame (Frame text {frame_text(page)!r}): {e}")
    after_text = wait_until_settled(page)
    assert frame_number(page) > before_n, (before_text, after_text)
    png = page.screenshot()
    save_artifact("05-after-drag.png", png)
    change = difference(pixels(png), before)
    assert change > 3.0, f"the view barely changed after a drag (mean abs difference {change:.2f})"


# ---------------------------------------------------------------------------------------------- HTTP
def get(url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of '..' or '%2e')."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_http_serves_the_page_and_no_files(server, trained_run):
    status, body = get(server.url, "/")
    assert status == 200 and b"<html" in body.lower(), (status, body[:200])
    run_files = sorted(p for p in trained_run.rglob("*") if p.is_file())
    assert run_files
    paths = ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "/etc/passwd",
             "/config.yaml"]
    paths += ["/" + p.relative_to(trained_run).as_posix() for p in run_files]
    paths += [p.as_posix() for p in run_files[:3]]  # absolute paths too
    for path in paths:
        status, body = get(server.url, path)
        assert status == 404, f"GET {path} answered {status}: {body[:200]!r}"
        assert b"root:" not in body
    config = (trained_run / "config.yaml").read_bytes()
    assert config[:200] not in get(server.url, "/config.yaml")[1]


def test_remote_host_needs_allow_remote(trained_run, tmp_path):
    result = subprocess.run(nerfxl("view", str(trained_run), "--host", "0.0.0.0", "--port", str(free_port())),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode != 0, f"it served on 0.0.0.0:\n{result.stdout}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nerfxl: error:") and "--allow-remote" in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert "nerfxl viewer:" not in result.stdout
