#!/usr/bin/env python3
"""Render a `nasseg report` page in headless Chromium: a full-page PNG screenshot, or the DOM.

    .venv/bin/python tools/screenshot_report.py runs/demo/seed0/report.html -o report.png
    .venv/bin/python tools/screenshot_report.py runs/demo/seed0/report.html --dump-dom > dom.html

Chromium (Debian: apt-get install chromium) runs headless, sandbox off, no GPU, no network
services, with a fresh throw-away profile. A screenshot is "full page": the window is tall
(``--height``, doubled while the page reaches the bottom edge, up to ``--max-height``) and the
blank margin below the page is cropped. tests/test_report_browser.py uses these functions.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--disable-extensions", "--mute-audio")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def run_chromium(url: str, *args: str, browser: str | None = None, timeout: float = 120) -> str:
    """Run headless Chromium on ``url`` with a fresh profile; its stdout (the DOM for --dump-dom)."""
    browser = browser or find_chromium()
    if browser is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="nasseg_chromium_") as profile:
        proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if "dbus" not in line]  # no system bus: noise
        raise RuntimeError(f"chromium exited with {proc.returncode}: " + "\n".join(errors[-10:]))
    return proc.stdout


def url_of(report: str | Path) -> str:
    path = Path(report).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{report}: no such file")
    return path.as_uri()


def dump_dom(report: str | Path, browser: str | None = None) -> str:
    """The DOM Chromium builds from the page (serialised after parsing and layout)."""
    return run_chromium(url_of(report), "--dump-dom", browser=browser)


def _content_bottom(png: Path) -> tuple[int, int, int]:
    """(width, height, last row that differs from the background colour) of a screenshot."""
    from PIL import Image, ImageChops

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    background = Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1)))
    box = ImageChops.difference(rgb, background).getbbox()
    return rgb.width, rgb.height, box[3] if box else 0


def screenshot(report: str | Path, output: str | Path, width: int = 1280, height: int = 8000,
               max_height: int = 32000, margin: int = 24, browser: str | None = None) -> Path:
    """A full-page PNG of the report at ``width`` CSS pixels; returns ``output``."""
    from PIL import Image

    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    url = url_of(report)
    while True:
        run_chromium(url, f"--screenshot={output}", f"--window-size={width},{height}", browser=browser)
        if not output.is_file():
            raise RuntimeError(f"chromium wrote no screenshot to {output}")
        _, shot_height, bottom = _content_bottom(output)
        if bottom < shot_height - margin or height >= max_height:
            break
        height = min(2 * height, max_height)  # the page reaches the bottom edge: it is taller
    if bottom + margin < shot_height:
        with Image.open(output) as image:
            cropped = image.crop((0, 0, image.width, bottom + margin))
        cropped.save(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="an HTML page written by nasseg report")
    parser.add_argument("-o", "--output", default=None, help="PNG to write (default: REPORT with .png)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    parser.add_argument("--height", type=int, default=8000, help="first window height tried (default 8000)")
    parser.add_argument("--max-height", type=int, default=32000, help="tallest window (default 32000)")
    parser.add_argument("--dump-dom", action="store_true", help="print the rendered DOM instead")
    parser.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    args = parser.parse_args(argv)
    try:
        if args.dump_dom:
            sys.stdout.write(dump_dom(args.report, args.chromium))
            return 0
        output = args.output or str(Path(args.report).with_suffix(".png"))
        png = screenshot(args.report, output, args.width, args.height, args.max_height, browser=args.chromium)
    except (RuntimeError, FileNotFoundError, subprocess.TimeoutExpired) as exc:
        print(f"screenshot_report: error: {exc}", file=sys.stderr)
        return 1
    from PIL import Image

    with Image.open(png) as image:
        print(f"wrote {png} ({image.width}x{image.height}, {png.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
