"""Graphviz drawings: what the rendered pictures say (op and node labels, weights, the path)."""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nasseg import arch as arches
from nasseg import space as spaces
from nasseg.arch.decode import beta_groups, decode_from_arrays
from nasseg.errors import NassegError
from nasseg.viz import draw
from nasseg.shell.cli.show import add_show_parser
from nasseg.viz.draw import (PATH_CLASS, draw_arch, draw_cell, draw_lattice, draw_network,
                             draw_space_cell, render, show)

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot is not installed")


def svg_texts(path: Path) -> list[str]:
    """Every text line drawn in an SVG, unescaped."""
    root = ET.parse(path).getroot()
    return [html.unescape("".join(t.itertext())) for t in root.iter(f"{SVG}text")]


def svg_marked(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Titles of the nodes and edges whose SVG class includes the path highlight."""
    nodes, edges = set(), set()
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        classes = g.get("class", "").split()
        if PATH_CLASS in classes:
            title = html.unescape(g.find(f"{SVG}title").text)
            if "edge" in classes:
                edges.add(tuple(title.split("->")))
            else:
                nodes.add(title)
    return nodes, edges


def marked_in_source(source: str) -> set[tuple[str, str]]:
    """Edges of a DOT source carrying class=path."""
    found = set()
    for line in source.splitlines():
        m = re.match(r'\s*"?([\w-]+)"?\s*->\s*"?([\w-]+)"?\s*\[(.*)\]', line)
        if m and re.search(rf'\bclass="?{PATH_CLASS}"?', m.group(3)):
            found.add((m.group(1), m.group(2)))
    return found


def path_transitions(space, path) -> set[tuple[str, str]]:
    strides = list(space.network.strides)
    nodes = [(0, 0)] + [(layer, strides.index(s)) for layer, s in enumerate(path, 1)]
    return {(f"s{a[0]}_{a[1]}", f"s{b[0]}_{b[1]}") for a, b in zip(nodes, nodes[1:])}


@pytest.fixture(scope="module")
def adl():
    return spaces.load("autodeeplab")


def random_lattice_arrays(space, seed=0):
    rng = np.random.default_rng(seed)
    n_alpha = sum(len(d["ops"]) for *_, d in space.cell_graph.edges(data=True))
    n_beta = sum(len(t) for _, t in beta_groups(space.network_graph))
    return {"normal": rng.normal(size=n_alpha)}, rng.normal(size=n_beta)


# --- cells ------------------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("kind", ["normal", "reduce"])
def test_darts_v2_cell_svg_shows_every_kept_op_and_node(tmp_path, kind):
    genotype = arches.load("darts_v2").cells[kind]
    out = render(draw_cell(genotype, kind), tmp_path / f"{kind}.svg")
    texts = svg_texts(out)
    kept_ops = [op for _, _, op in genotype.edges()]
    assert sorted(t for t in texts if t in set(kept_ops)) == sorted(kept_ops)  # one label per kept edge
    for label in ["c_{k-2}", "c_{k-1}", "c_{k}", "0", "1", "2", "3"]:
        assert label in texts
    assert ("reduction cell" if kind == "reduce" else "normal cell") in texts


@needs_dot
def test_draw_arch_has_both_cells_and_lattice_path(tmp_path):
    v2 = arches.load("darts_v2")
    texts = svg_texts(render(draw_arch(v2), tmp_path / "v2.svg"))
    assert {"normal cell", "reduction cell"} <= set(texts)
    assert texts.count("max_pool_3x3") == 5 and texts.count("sep_conv_3x3") == 5

    adl_arch = arches.load("autodeeplab")
    out = render(draw_arch(adl_arch), tmp_path / "adl.svg")
    nodes, edges = svg_marked(out)
    assert len(nodes) == len(adl_arch.path) + 1 and len(edges) == len(adl_arch.path)
    assert "atrous_conv_5x5" in svg_texts(out)


# --- search-space cells -------------------------------------------------------------------------

@needs_dot
def test_space_cell_with_weights_shows_them(tmp_path):
    space = spaces.load("darts")
    rows = np.full((14, 8), 0.05)
    rows[:, 4] = 0.65  # sep_conv_3x3 dominates every edge
    rows[3, [3, 4]] = 0.65, 0.05  # ... except edge 3, where skip_connect leads
    texts = svg_texts(render(draw_space_cell(space, "normal", {"normal": rows.tolist()}), tmp_path / "w.svg"))
    assert texts.count("sep_conv_3x3 0.650") == 13
    assert texts.count("skip_connect 0.650") == 1 and "none 0.050" in texts
    bold = [html.unescape(t.text) for t in ET.parse(tmp_path / "w.svg").getroot().iter(f"{SVG}text")
            if t.get("font-weight") == "bold"]
    assert sorted(bold) == ["sep_conv_3x3 0.650"] * 7 + ["skip_connect 0.650"]  # the 8 kept edges
    # raw alphas (a flat vector) are softmaxed per edge
    raw = np.zeros(112)
    texts = svg_texts(render(draw_space_cell(space, "normal", raw), tmp_path / "raw.svg"))
    assert texts.count("none 0.125") == 14


@needs_dot
def test_space_cell_without_weights_lists_candidate_ops(tmp_path):
    space = spaces.load("darts")
    text = " ".join(svg_texts(render(draw_space_cell(space, "reduce"), tmp_path / "s.svg")))
    for op in space.op_names:
        assert op in text


def test_space_cell_rejects_wrong_sizes_and_kinds():
    space = spaces.load("darts")
    with pytest.raises(NassegError, match="expected 112 alphas"):
        draw_space_cell(space, "normal", np.zeros(10))
    with pytest.raises(NassegError, match="cell types"):
        draw_space_cell(space, "stem")


# --- the lattice --------------------------------------------------------------------------------

@needs_dot
def test_lattice_highlights_exactly_the_decoded_path(tmp_path, adl):
    alphas, betas = random_lattice_arrays(adl)
    decoded = decode_from_arrays(adl, alphas, betas).path
    graph = draw_lattice(adl, betas=betas)
    expected = path_transitions(adl, decoded)
    assert marked_in_source(graph.source) == expected
    nodes, edges = svg_marked(render(graph, tmp_path / "lattice.svg"))
    assert edges == expected
    assert nodes == {name for edge in expected for name in edge}
    n_transitions = len(adl.network_graph.edges)
    drawn = re.findall(r"^\s*s\d+_\d+ -> s\d+_\d+ \[(.*)\]$", graph.source, re.M)
    assert len([attrs for attrs in drawn if "invis" not in attrs]) == n_transitions
    texts = svg_texts(tmp_path / "lattice.svg")
    assert sum(bool(re.fullmatch(r"0\.\d\d|1\.00", t)) for t in texts) == n_transitions  # a beta per transition


def test_lattice_with_explicit_path_and_transition_maps(adl):
    path = arches.load("autodeeplab").path
    assert marked_in_source(draw_lattice(adl, path=path).source) == path_transitions(adl, path)
    # a run file's betas map ("l_i->l_j": weight) decodes the same path as the raw betas
    _, betas = random_lattice_arrays(adl, seed=3)
    from nasseg.viz.draw import transition_weights
    weights = transition_weights(adl.network_graph, betas)
    as_run_file = {f"{a[0]}_{a[1]}->{b[0]}_{b[1]}": w for (a, b), w in weights.items()}
    assert draw_lattice(adl, betas=as_run_file).source == draw_lattice(adl, betas=betas).source
    assert not marked_in_source(draw_lattice(adl).source)  # nothing decoded, nothing highlighted
    with pytest.raises(NassegError, match="not a state"):
        draw_lattice(adl, path=[4, 16, 16])
    with pytest.raises(NassegError, match="chain"):
        draw_lattice(spaces.load("darts"))


# --- networks -----------------------------------------------------------------------------------

@needs_dot
def test_network_labels_channels_and_strides(tmp_path):
    texts = " ".join(svg_texts(render(draw_network(arches.load("autodeeplab")), tmp_path / "n.svg")))
    for text in ["cell 12", "800 channels", "stride 32", "ASPP", "decoder", "low-level", "rates 12/24/36"]:
        assert text in texts
    texts = " ".join(svg_texts(render(draw_network(arches.load("darts_v2"), layers=6), tmp_path / "d.svg")))
    assert "reduction cell 3" in texts and "reduction cell 5" in texts and "normal cell 6" in texts
    assert "512 channels" in texts and "stride 16" in texts


# --- rendering, show and the CLI ------------------------------------------------------------------------

def test_render_errors_and_source_output(tmp_path, monkeypatch):
    graph = draw_cell(arches.load("darts_v2").cells["normal"])
    with pytest.raises(NassegError, match=r"unknown picture format '\.jpg'"):
        render(graph, tmp_path / "cell.jpg")
    out = render(graph, tmp_path / "cell.gv")
    assert out.read_text() == graph.source and "sep_conv_3x3" in graph.source
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(NassegError) as error:
        render(graph, tmp_path / "cell.svg")
    assert str(error.value) == "graphviz 'dot' not found; install graphviz (apt-get install graphviz)"
    assert not (tmp_path / "cell.svg").exists()
    render(graph, tmp_path / "still.dot")  # the source needs no graphviz


@needs_dot
def test_show_builtins_and_files(tmp_path):
    out = show("darts_v2", tmp_path / "v2.svg", kind="reduce")
    texts = svg_texts(out)
    assert "reduction cell" in texts and "normal cell" not in texts
    texts = " ".join(svg_texts(show("space:autodeeplab", tmp_path / "adl_space.svg")))
    assert "network-level lattice" in texts and "stride 32" in texts and "atrous_conv_5x5" in texts
    assert svg_marked(show("autodeeplab", tmp_path / "adl.svg"))[1]  # the arch: its path
    space_file = str(spaces.resolve("darts"))
    assert "normal cell (14 candidate edges)" in svg_texts(show(space_file, tmp_path / "space.svg"))
    assert show(space_file, tmp_path / "space.png").read_bytes()[:4] == b"\x89PNG"


def test_show_errors(tmp_path):
    with pytest.raises(NassegError, match="no_such_thing"):
        show("no_such_thing", tmp_path / "x.svg")
    with pytest.raises(NassegError, match="file not found"):
        show(str(tmp_path / "missing.yaml"), tmp_path / "x.svg")
    with pytest.raises(NassegError, match="unknown picture format"):
        show("darts_v2", tmp_path / "x.bmp")
    with pytest.raises(NassegError, match="--epoch applies to a search run directory"):
        show("darts_v2", tmp_path / "x.svg", epoch=3)
    with pytest.raises(NassegError, match="cell types normal, reduce; got 'up'"):
        show("darts_v2", tmp_path / "x.svg", kind="up")
    with pytest.raises(NassegError, match="not a search run directory"):
        show(str(tmp_path), tmp_path / "x.svg")


@needs_dot
def test_show_real_darts_run(tmp_path, darts_run):
    """A real (tiny) DARTS search run (conftest.darts_run): its decoded cell and the epoch's weights."""
    arch = arches.load_arch(darts_run / "arch.yaml")
    epoch = arch.meta["epoch"]
    texts = svg_texts(show(str(darts_run), tmp_path / "run.svg", kind="normal"))
    assert "decoded normal cell" in texts and f"search-space normal cell, epoch {epoch}" in texts
    kept = [op for _, _, op in arch.cells["normal"].edges()]
    assert sorted(t for t in texts if t in set(kept)) == sorted(kept)
    weights = json.loads((darts_run / "alphas" / f"epoch_{epoch:03d}.json").read_text())["alphas"]["normal"]
    ops = spaces.load(darts_run / "space.yaml").op_names
    best = max(range(len(ops)), key=lambda i: weights[0][i])
    assert f"{ops[best]} {weights[0][best]:.3f}" in texts  # edge 0's strongest op and its weight
    last = sorted((darts_run / "alphas").glob("epoch_*.json"))[-1]
    texts = svg_texts(show(str(darts_run), tmp_path / "last.svg", epoch=int(last.stem[6:])))
    assert f"search-space reduction cell, epoch {int(last.stem[6:])}" in texts


@needs_dot
def test_show_lattice_run_and_cli(tmp_path, adl, capsys):
    """A lattice run directory made from random parameters: the path drawn is the decoded one."""
    run = tmp_path / "run"
    (run / "alphas").mkdir(parents=True)
    shutil.copy(spaces.resolve("autodeeplab"), run / "space.yaml")
    alphas, betas = random_lattice_arrays(adl, seed=7)
    (run / "alphas" / "epoch_001.json").write_text(json.dumps(
        {"epoch": 1, "alphas_raw": {"normal": alphas["normal"].tolist()}, "betas_raw": betas.tolist()}))
    path = decode_from_arrays(adl, alphas, betas).path

    parser = argparse.ArgumentParser()
    add_show_parser(parser.add_subparsers())
    args = parser.parse_args(["show", str(run), "-o", str(tmp_path / "run.svg"), "--epoch", "1"])
    assert args.run(args) == 0
    assert "wrote" in capsys.readouterr().out
    _, edges = svg_marked(tmp_path / "run.svg")
    assert edges == {(f"lat_{a}", f"lat_{b}") for a, b in path_transitions(adl, path)}
    with pytest.raises(SystemExit):
        parser.parse_args(["show", "darts_v2", "-o", "x.svg", "--cell", "stem"])
