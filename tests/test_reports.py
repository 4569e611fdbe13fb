"""The HTML reports open in a real browser (headless Chromium, Debian package ``chromium``; ``tools/dev.sh``
installs it; the slow tier, which ``.ci/run`` runs): the page renders (a screenshot that is not blank), every image is decoded by the browser, every link
into the run folder resolves, and the page logs nothing to the console (no script error)."""
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import pytest

from pipelines.images.cli import main as image_od
from pipelines.video.cli import main as vad

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("href", "src") and v]


def browse(page: Path, work: Path) -> tuple:
    """(screenshot BGR, the DOM after the page's scripts ran, the browser's log)."""
    if BROWSER is None:
        pytest.fail("Chromium is not installed: `bash tools/dev.sh test` installs it (apt package chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=5000", "--window-size=1100,1500"]
    shot = work / "screenshot.png"
    subprocess.run([BROWSER, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120,
                   check=True)
    dom = subprocess.run([BROWSER, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True)
    return cv2.imread(str(shot)), dom.stdout, dom.stderr


def check_page(page: Path, work: Path, expect_images: bool) -> None:
    img, dom, log = browse(page, work)
    assert img is not None and img.std() > 20 and (img < 128).mean() > 0.01, "blank page"
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert loaded, "the page's load script did not run"
    assert loaded[1] == loaded[2] and (int(loaded[2]) > 0) == expect_images, loaded[0]  # every image decoded
    assert not [line for line in log.splitlines() if "CONSOLE" in line], log  # no script error or message
    links = _Links()
    links.feed(page.read_text())
    local = [t for t in links.targets if not t.startswith(("#", "data:", "http:", "https:"))]
    assert local and all((page.parent / t).resolve().is_file() for t in local), local
    assert all((page.parent / t).resolve().is_relative_to(page.parent.resolve()) for t in local)


@pytest.mark.slow  # a demo run, a render and two browser starts: about 5 s
def test_the_video_report_renders_in_a_browser(tmp_path):
    out = tmp_path / "run"
    assert vad(["demo", "--out", str(out), "--quiet"]) == 0
    assert vad(["report", "--out", str(out), "--render-top", "1", "--quiet"]) == 0
    page = out / "report.html"
    text = page.read_text()
    assert "How well it did" in text and "render/" in text and text.count("<svg") == 1 + 4  # ROC + 4 curves
    assert page.stat().st_size < 200_000
    check_page(page, tmp_path, expect_images=True)


@pytest.mark.slow
def test_the_bench_report_renders_in_a_browser(tmp_path):
    out = tmp_path / "bench"
    assert image_od(["bench", "--dataset", "digits", "--method", "iforest", "--classes", "0", "1", "--out", str(out),
                     "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "Table 1 layout" in text and text.count("<td>iforest</td>") == 1 + 2  # the summary row, a row per class
    check_page(out / "report.html", tmp_path, expect_images=False)
