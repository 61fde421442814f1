"""The HTML of the report pages: the data of :mod:`.collect` through the jinja2 templates in
templates/. Escaping is on everywhere; only our own graphviz drawings are inlined as markup."""

from __future__ import annotations

import base64
import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from .collect import SECTIONS, Picture


def fmt(value: Any) -> str:
    """A table cell: '–' for nothing, integers without a point, other floats to 4 digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def inline_svg(picture: Picture) -> Markup:
    """A graphviz SVG written by nasseg.viz.draw, its ids prefixed so several drawings share a page."""
    text = picture.path.read_text()
    return Markup(re.sub(r'\bid="', f'id="{picture.name}_', text[text.index("<svg"):]))


def wbr(name: Any) -> Markup:
    """A snake_case header that may break after its underscores."""
    return escape(str(name)).replace("_", Markup("_<wbr>"))


ENV = Environment(loader=PackageLoader("nasseg.shell.report"), autoescape=True, undefined=StrictUndefined,
                  trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(fmt=fmt, data_uri=data_uri, inline_svg=inline_svg, wbr=wbr)


def _render(template: str, base: Path, **context: Any) -> str:
    def href(target: Path) -> str:
        return quote(os.path.relpath(target.resolve(), base.resolve()))

    return ENV.get_template(template).render(href=href, sections=SECTIONS, written=time.strftime("%Y-%m-%d %H:%M"),
                                             **context)


def render_run(page: dict[str, Any], base: Path) -> str:
    """The page of one run; links are relative to ``base`` (the report's folder)."""
    run = page["run"]
    return _render("run.html", base, page=page, run=run, title=f"{run.name} seed {fmt(run.seed)}: search report")


def render_experiment(page: dict[str, Any], base: Path) -> str:
    """The index page of an experiment; links are relative to ``base``."""
    return _render("experiment.html", base, page=page, title=f"{page['name']}: experiment report")
