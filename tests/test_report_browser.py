"""The report as a browser shows it: headless Chromium parses and lays out the page of a tiny real
search with a tiny real retraining (fixtures of test_report.py); every section is in the rendered
DOM with content, every image decodes, and a full-page screenshot is a real picture.
tools/screenshot_report.py does the Chromium work."""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nasseg.shell.report import SECTIONS

TESTS = Path(__file__).resolve().parent
pytestmark = [
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="chromium is not installed (Debian: apt-get install chromium): no headless-browser "
                              "check of the HTML report"),
    pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot is not installed"),
]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


shot = _load("screenshot_report", TESTS.parent / "tools" / "screenshot_report.py")
_fixtures = _load("_report_fixtures", TESTS / "test_report.py")
experiment, retrained = _fixtures.experiment, _fixtures.retrained  # the tiny lattice search + its retraining


class Sections(HTMLParser):
    """Per <section id=...>: its <h2> text, its other text, and how many img/svg/table/pre it holds;
    and the src of every <img> on the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.images: list[str] = []
        self.current: str | None = None
        self.in_h2 = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs.get("id")
            self.sections[self.current] = {"title": "", "text": "", "img": 0, "svg": 0, "table": 0, "pre": 0}
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        if self.current:
            self.in_h2 = self.in_h2 or tag == "h2"
            if tag in ("img", "svg", "table", "pre"):
                self.sections[self.current][tag] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        elif tag == "h2":
            self.in_h2 = False

    def handle_data(self, data):
        if self.current:
            self.sections[self.current]["title" if self.in_h2 else "text"] += data


@pytest.fixture(scope="module")
def report(retrained) -> Path:
    return retrained / "report.html"


@pytest.fixture(scope="module")
def dom(report) -> Sections:
    parsed = Sections()
    parsed.feed(shot.dump_dom(report))
    return parsed


def test_every_section_is_rendered_with_content(dom, report):
    assert list(dom.sections) == list(SECTIONS)  # all of them, in the navigation's order
    for key, found in dom.sections.items():
        assert found["title"].strip() == SECTIONS[key]
        assert len(found["text"].split()) >= 5 or found["img"] + found["svg"] + found["table"], key
    assert dom.sections["curves"]["img"] >= 4 and dom.sections["arch"]["svg"] >= 3
    retrain = dom.sections["retrain"]
    assert retrain["img"] == 1 and retrain["table"] == 3  # settings, results, per-class IoU
    assert "val mIoU" in retrain["text"] and "Sky" in retrain["text"]
    assert dom.sections["metrics"]["table"] == 1


def test_every_image_is_an_embedded_png_that_decodes(dom, report):
    from PIL import Image

    source = report.read_text()
    assert len(dom.images) == source.count("<img ") >= 6
    for src in dom.images:
        assert src.startswith("data:image/png;base64,"), src[:60]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as image:
            image.verify()
            assert image.format == "PNG" and image.width > 200 and image.height > 100


def test_full_page_screenshot(report, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "report.png"
    assert shot.main([str(report), "-o", str(png), "--height", "3000"]) == 0
    assert re.fullmatch(rf"wrote {re.escape(str(png))} \(1280x\d+, \d+ KiB\)\n", capsys.readouterr().out)
    assert png.stat().st_size > 100_000
    with Image.open(png) as image:
        rgb = image.convert("RGB")
    assert rgb.width == 1280 and rgb.height > 5000  # taller than the first window tried: the whole page
    width, height, bottom = shot._content_bottom(png)
    assert height - bottom == 24  # cropped to the content plus the margin
    small = rgb.resize((160, rgb.height // 8))
    colours = small.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 100  # pictures, drawings and text, not a blank page
    white = sum(count for count, colour in colours or [] if min(colour) > 245)
    assert colours is None or white < 0.97 * small.width * small.height


def test_script_errors(tmp_path, capsys):
    assert shot.main([str(tmp_path / "missing.html")]) == 1
    assert "missing.html: no such file" in capsys.readouterr().err
