"""Graphviz drawings of cells, search-space cells, the Auto-DeepLab lattice and decoded networks.

Every ``draw_*`` function returns a :class:`graphviz.Digraph` laid out by ``dot`` (cells and
the lattice left to right, networks top to bottom), so a test can read its DOT source and
:func:`render` can write it to .svg/.png/.pdf (or the source to .dot/.gv). Composite pictures
(``draw_arch``, ``nasseg show``) keep each part as a cluster in the source, but are rendered
part by part and stacked with ``gvpack``: in one dot layout, clusters share ranks, so a cell's
long op labels would stretch the lattice's columns.

The lattice is a grid (rank per layer, invisible placeholder slots for unreachable states,
strides 4..32 top to bottom, as in the Auto-DeepLab figure) so rows stay aligned.

Lattice states and transitions on the decoded path, and only those, carry the attribute
``class="path"`` (it reaches the SVG as ``class="node path"`` / ``class="edge path"``), so a
reader or a test can find exactly the highlighted path.
"""

from __future__ import annotations

import html
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

import graphviz
import networkx as nx
import numpy as np

from .. import arch as arches, space as spaces
from ..arch import ArchSpec, CellGenotype
from ..arch.decode import decode_cell, decode_path, log_transition_weights
from ..config import did_you_mean, load_yaml
from ..errors import NassegError
from ..io import atomic_write, atomic_write_text
from ..models.autodeeplab_net import lattice_cell
from ..models.darts_net import darts_cells, reduction_layers
from ..search import decode_run
from ..search.rundir import RunDir
from ..space import SearchSpace
from ..space.compile import beta_groups

Node = tuple[int, int]
PATH_CLASS = "path"
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
SOURCE_SUFFIXES = (".dot", ".gv")
FONT = "Helvetica"
INPUT_FILL, NODE_FILL, OUTPUT_FILL = "darkseagreen2", "lightblue", "palegoldenrod"
PATH_COLOR, PATH_FILL = "#d62728", "#f4a6a6"
CLUSTER_STYLE = {"style": "rounded", "color": "#999999", "margin": "12"}
_OP_COLORS = (("skip", "#7f7f7f"), ("identity", "#7f7f7f"), ("pool", "#1f77b4"), ("none", "#bbbbbb"),
              ("sep", "#2ca02c"), ("dil", "#d35400"), ("atrous", "#d35400"))


def _op_color(op: str) -> str:
    """One colour per op family, so kept ops are told apart at a glance."""
    return next((color for key, color in _OP_COLORS if key in op), "#8e44ad")


def _digraph(title: str | None = None, name: str | None = None, **graph_attr: str) -> graphviz.Digraph:
    attrs = {"rankdir": "LR", "newrank": "true", "fontname": FONT, "fontsize": "14", "labelloc": "t",
             "nodesep": "0.3", "ranksep": "0.5", **graph_attr}
    if title:
        attrs["label"] = title
    return graphviz.Digraph(name=name, graph_attr=attrs,
                            node_attr={"fontname": FONT, "fontsize": "12"},
                            edge_attr={"fontname": FONT, "fontsize": "10", "arrowsize": "0.7"})


def _cluster(graph: graphviz.Digraph, sub: graphviz.Digraph, name: str) -> None:
    """Add ``sub`` to ``graph`` as a boxed cluster (its title becomes the cluster label) and
    remember it as a part that :func:`render` lays out on its own (see the module doc)."""
    graph.__dict__.setdefault("_nasseg_parts", []).append(sub)
    cluster = sub.copy()
    cluster.name = f"cluster_{name}"
    cluster.graph_attr.pop("rankdir", None)
    cluster.graph_attr.update(CLUSTER_STYLE)
    graph.subgraph(cluster)


def _cell_title(kind: str) -> str:
    return {"normal": "normal cell", "reduce": "reduction cell"}.get(kind, f"{kind} cell")


def _cell_frame(graph: graphviz.Digraph, inputs: int, nodes: Sequence[int], prefix: str) -> None:
    """Input, intermediate and output nodes of a cell, DARTS-paper style."""
    with graph.subgraph() as rank:
        rank.attr(rank="same")
        for i in range(inputs):
            rank.node(f"{prefix}n{i}", f"c_{{k-{inputs - i}}}", shape="box", style="rounded,filled",
                      fillcolor=INPUT_FILL)
            if i:  # c_{k-2} above c_{k-1}
                rank.edge(f"{prefix}n{i - 1}", f"{prefix}n{i}", style="invis")
    for node in nodes:
        graph.node(f"{prefix}n{node}", str(node - inputs), shape="box", style="rounded,filled",
                   fillcolor=NODE_FILL, width="0.4")
    graph.node(f"{prefix}out", "c_{k}", shape="box", style="rounded,filled", fillcolor=OUTPUT_FILL)


def draw_cell(genotype: CellGenotype, kind: str = "normal", title: str | None = None,
              prefix: str = "") -> graphviz.Digraph:
    """One decoded cell as in the DARTS paper: inputs c_{k-2}, c_{k-1}, numbered intermediate
    nodes, op-labelled edges and the concat into c_{k}."""
    graph = _digraph(title or _cell_title(kind))
    _cell_frame(graph, genotype.inputs, sorted(genotype.nodes), prefix)
    for source, node, op in genotype.edges():
        graph.edge(f"{prefix}n{source}", f"{prefix}n{node}", label=op, color=_op_color(op),
                   fontcolor=_op_color(op), penwidth="1.5")
    for node in genotype.concat:
        graph.edge(f"{prefix}n{node}", f"{prefix}out", color="#aaaaaa")
    return graph


# --- search-space cells -----------------------------------------------------------------------

def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def edge_weight_rows(space: SearchSpace, kind: str, weights: Any) -> list[np.ndarray]:
    """Per-edge op weights (in edge-index order) from what searches store: per-edge rows
    (``Supernet.edge_weights``, a run's ``alphas``) or a flat / 2-D raw alpha vector
    (``alphas_raw``, ``Supernet.alphas``). Rows that are not already distributions are
    softmaxed, so raw alphas and softmax weights both work."""
    if isinstance(weights, Mapping):
        if kind not in weights:
            raise NassegError(f"no weights for the {kind!r} cell; got {', '.join(map(str, weights)) or 'none'}")
        weights = weights[kind]
    edges = sorted(space.cell_graph.edges(data=True), key=lambda e: e[2]["index"])
    sizes = [len(data["ops"]) for *_, data in edges]
    if isinstance(weights, (list, tuple)) and len(weights) == len(sizes) and \
            all(np.size(_as_array(w)) == n for w, n in zip(weights, sizes)):
        rows = [_as_array(w).reshape(-1) for w in weights]
    else:
        flat = _as_array(weights).reshape(-1)
        if len(flat) != sum(sizes):
            raise NassegError(f"space {space.name!r}: expected {sum(sizes)} alphas for the {kind!r} cell "
                              f"({len(sizes)} edges), got {len(flat)}")
        rows = np.split(flat, np.cumsum(sizes)[:-1])
    softmax = [np.exp(row - row.max()) / np.exp(row - row.max()).sum() for row in rows]
    return [row if row.min() >= 0 and abs(row.sum() - 1) < 1e-4 else soft for row, soft in zip(rows, softmax)]


def _wrap(names: Sequence[str], per_line: int = 2) -> str:
    return ",\n".join(", ".join(names[i:i + per_line]) for i in range(0, len(names), per_line))


def _labelled_edge(graph: graphviz.Digraph, source: str, target: str, label: str, **attrs: str) -> None:
    """An edge through a small label box: dot never overlaps nodes, so each label stays clear
    of the others and visibly sits on its own edge (plain edge labels of a dense cell collide)."""
    box = f"{source}__{target}"
    graph.node(box, label, shape="box", style="rounded", color=attrs.get("color", "#666666"),
               fontsize="9", margin="0.05,0.03", height="0.2", width="0.2")
    graph.edge(source, box, arrowhead="none", **attrs)
    graph.edge(box, target, **attrs)


def draw_space_cell(space: SearchSpace, kind: str = "normal", weights: Any = None, title: str | None = None,
                    prefix: str = "", top: int = 3) -> graphviz.Digraph:
    """The search-space cell: every candidate edge, labelled with its top ops and their softmax
    weights (pen width and colour by the strongest decodable op) when ``weights`` are given
    (``{kind: ...}``, per-edge rows or raw alphas), else with its candidate op set."""
    _check_kinds(kind, space.cell_types, f"space {space.name!r}")
    graph = _digraph()
    cell = space.cell_graph
    graph.attr(ranksep="0.3" if weights is not None else "0.5", nodesep="0.15")
    inputs = sum(1 for _, role in cell.nodes(data="role") if role == "input")
    _cell_frame(graph, inputs, sorted(n for n, r in cell.nodes(data="role") if r == "intermediate"), prefix)
    for node in cell.graph["outputs"]:
        graph.edge(f"{prefix}n{node}", f"{prefix}out", color="#aaaaaa")
    edges = sorted(cell.edges(data=True), key=lambda e: e[2]["index"])
    if weights is None:
        full = tuple(space.op_names)
        for source, node, data in edges:
            if tuple(data["ops"]) == full:
                graph.edge(f"{prefix}n{source}", f"{prefix}n{node}", color="#666666")
            else:
                _labelled_edge(graph, f"{prefix}n{source}", f"{prefix}n{node}", _wrap(data["ops"]), color="#666666")
        note = f"unlabelled edges: all {len(full)} ops ({_wrap(full, 4)})"
    else:
        rows = edge_weight_rows(space, kind, weights)
        exclude = set(cell.graph["decode_exclude"])
        kept = {(source, node) for source, node, _ in decode_cell(cell, rows).edges()}
        strengths = [max((w for op, w in zip(data["ops"], row) if op not in exclude), default=0.0)
                     for (*_, data), row in zip(edges, rows)]
        low, high = min(strengths), max(strengths)
        for (source, node, data), row, strength in zip(edges, rows, strengths):
            order = sorted(range(len(row)), key=lambda i: -row[i])[:top]
            best = next((i for i in order if data["ops"][i] not in exclude), None)
            lines = [f"{html.escape(data['ops'][i])} {row[i]:.3f}" for i in order]
            lines = [f"<B>{text}</B>" if i == best and (source, node) in kept else text
                     for i, text in zip(order, lines)]
            scale = (strength - low) / (high - low) if high > low else 1.0  # contrast within this cell
            _labelled_edge(graph, f"{prefix}n{source}", f"{prefix}n{node}",
                           "<" + '<BR ALIGN="LEFT"/>'.join(lines) + '<BR ALIGN="LEFT"/>>',
                           color=f"#1f4e99{int(255 * (0.3 + 0.7 * scale)):02x}", penwidth=f"{0.8 + 2.7 * scale:.2f}",
                           style="solid" if (source, node) in kept else "dashed")
        note = (f"top {top} ops per edge with softmax(alpha); bold: the op decoding keeps, dashed: a dropped edge;\n"
                "pen width: the strongest op's weight, from the weakest edge of this cell to the strongest")
    graph.attr(label=f"{title or f'{space.name}: {_cell_title(kind)}'}\n{note}")
    return graph


# --- the lattice --------------------------------------------------------------------------------

def transition_weights(network: nx.DiGraph, betas: Any) -> dict[tuple[Node, Node], float]:
    """softmax(beta) per transition from raw betas (``Supernet.betas``, a run's ``betas_raw``),
    a ``{(source, target): weight}`` map (``Supernet.transition_weights()``) or a run's
    ``betas`` map with keys ``"l_i->l_j"``."""
    if betas is None:
        return {}
    if isinstance(betas, Mapping):
        return {tuple(tuple(int(x) for x in end.split("_")) for end in key.split("->")) if isinstance(key, str)
                else key: float(_as_array(value).reshape(-1)[0]) for key, value in betas.items()}
    return {key: math.exp(value) for key, value in log_transition_weights(beta_groups(network), betas).items()}


def _path_nodes(network: nx.DiGraph, strides: Sequence[int], path: Sequence[int]) -> list[Node]:
    """Lattice states of a path of strides, from the stem; refuses a path the lattice lacks."""
    nodes: list[Node] = [(0, 0)]
    for layer, stride in enumerate(path, start=1):
        if stride not in strides or not network.has_edge(nodes[-1], (layer, strides.index(stride))):
            raise NassegError(f"path {list(path)}: layer {layer} at stride {stride} is not a state "
                              f"reachable in this lattice (strides {list(strides)})")
        nodes.append((layer, strides.index(stride)))
    return nodes


def _add_lattice(graph: graphviz.Digraph, network: nx.DiGraph, strides: Sequence[int],
                 weights: Mapping[tuple[Node, Node], float], path: Sequence[Node], prefix: str,
                 head: str | None) -> graphviz.Digraph:
    """A grid: one rank per layer (dot column), slots top to bottom by stride; missing states are
    invisible placeholders so rows stay aligned. Only the path gets ``class="path"``."""
    layers = max(layer for layer, _ in network.nodes)
    finals = sorted(n for n in network.nodes if n[0] == layers)
    on_path, path_edges = set(path), set(zip(path, path[1:]))
    levels = range(len(strides))

    def slot(col: int, level: int) -> str:
        return f"{prefix}{'s' if (col, level) in network else 'x'}{col}_{level}"

    graph.attr(nodesep="0.3", ranksep="0.75" if weights else "0.5")
    size = {"width": "0.36", "height": "0.36", "fixedsize": "true"}  # equal slots keep rows aligned
    for col in range(-1, layers + 1 + bool(head)):
        with graph.subgraph() as rank:
            rank.attr(rank="same")
            header = f"{prefix}h{col}"
            text = "layer" if col == -1 else "stem" if col == 0 else str(col) if col <= layers else ""
            width = {-1: "0.8", 0: "0.5", layers + 1: "0.6"}.get(col, "0.36")
            rank.node(header, text, shape="plaintext", fontsize="11", fontcolor="#555555",
                      **{**size, "width": width})
            previous = header
            for level in levels:
                name, group = slot(col, level), f"{prefix}r{level}"
                if col == -1:
                    rank.node(name, f"stride {strides[level]}", shape="plaintext", fontsize="11",
                              group=group, **{**size, "width": width})
                elif col > layers:
                    shown = (layers, level) in network
                    rank.node(name, head if shown else "", shape="box", style="rounded,filled" if shown else "invis",
                              fillcolor=OUTPUT_FILL, fontsize="10", group=group, **{**size, "width": width})
                elif (col, level) in network:
                    data = network.nodes[(col, level)]
                    attrs = {"class": PATH_CLASS, "style": "filled", "fillcolor": PATH_FILL,
                             "color": PATH_COLOR, "penwidth": "2"} if (col, level) in on_path else \
                        {"style": "filled", "fillcolor": "#eeeeee", "color": "#888888"}
                    rank.node(name, "stem" if col == 0 else "", shape="box" if col == 0 else "circle",
                              fontsize="10", group=group,
                              tooltip=f"layer {col}, stride {data['stride']}",
                              **{**size, "width": width}, **attrs)
                else:
                    rank.node(name, "", shape="circle", style="invis", group=group, **size)
                graph.edge(previous, name, style="invis")  # fixes the top-to-bottom order
                previous = name
        if col < layers + bool(head):  # keep rows straight through gaps and placeholders
            for level in levels:
                if not network.has_edge((col, level), (col + 1, level)):
                    graph.edge(slot(col, level), slot(col + 1, level), style="invis")
            graph.edge(f"{prefix}h{col}", f"{prefix}h{col + 1}", style="invis")
    for source, target in network.edges:
        weight = weights.get((source, target))
        attrs: dict[str, str] = {}
        if weight is not None:  # near the tail, on a white patch so the lines stay readable
            attrs.update(taillabel=f'<<TABLE BORDER="0" CELLPADDING="0" BGCOLOR="#ffffffc0"><TR><TD>'
                                   f'{weight:.2f}</TD></TR></TABLE>>',
                         labelfontsize="8", labeldistance="1.15", labelangle="0", labelfontcolor="#333333")
        if (source, target) in path_edges:
            attrs.update({"class": PATH_CLASS, "color": PATH_COLOR, "penwidth": "3.5"})
        elif weight is None:
            attrs.update(color="#55555588", penwidth="0.8")
        else:  # stronger transitions darker and wider
            attrs.update(color=f"#555555{int(255 * (0.25 + 0.6 * weight)):02x}", penwidth=f"{0.5 + 2.5 * weight:.2f}")
        graph.edge(slot(*source), slot(*target), arrowsize="0.5", **attrs)
    if head:
        for final in finals:
            graph.edge(slot(*final), slot(layers + 1, final[1]), color="#999999", style="dashed",
                       arrowsize="0.5")
    return graph


def draw_lattice(space: SearchSpace, betas: Any = None, path: Sequence[int] | None = None,
                 title: str | None = None, prefix: str = "") -> graphviz.Digraph:
    """The Auto-DeepLab lattice: columns are layers, rows strides, reachable states only;
    transitions drawn by softmax(beta) (pen width, label) and the path (``path`` strides, else
    the one decoded from ``betas``) in thick red. Betas: see :func:`transition_weights`."""
    if space.network.type != "lattice":
        raise NassegError(f"space {space.name!r} is a chain; only lattice spaces have a lattice to draw")
    network = space.network_graph
    weights = transition_weights(network, betas)
    if path is None and betas is not None:
        path = decode_path(network, weights)
    nodes = _path_nodes(network, space.network.strides, path) if path else []
    head = space.network.head.type.upper() if space.network.head.type == "aspp" else space.network.head.type
    default = f"{space.name}: network-level search space" + (f", path {list(path)}" if path else "")
    return _add_lattice(_digraph(title or default), network, space.network.strides, weights, nodes, prefix, head)


def _path_network(path: Sequence[int]) -> tuple[nx.DiGraph, tuple[int, ...]]:
    """A lattice holding only the states of ``path`` (what an ArchSpec knows), stem at stride 4."""
    base = min(4, *path)
    strides = tuple(base * 2 ** i for i in range(int(math.log2(max(32, *path) // base)) + 1))
    network = nx.DiGraph()
    nodes = [(0, 0)] + [(layer, strides.index(s)) for layer, s in enumerate(path, start=1)]
    for node in nodes:
        network.add_node(node, stride=strides[node[1]])
    network.add_edges_from(zip(nodes, nodes[1:]))
    return network, strides


# --- architectures and networks ---------------------------------------------------------------------

def draw_arch(arch: ArchSpec, kinds: Sequence[str] | None = None, title: str | None = None) -> graphviz.Digraph:
    """Every cell of an ArchSpec (one cluster per kind) and, for a lattice architecture, its
    path through the stride grid."""
    kinds = _check_kinds(kinds, tuple(arch.cells), f"architecture {arch.name!r}")
    graph = _digraph(title or arch.name)
    for kind in kinds:
        title = None if arch.path is None or len(arch.cells) > 1 else "cell"
        _cluster(graph, draw_cell(arch.cells[kind], kind, title, f"{kind}_"), kind)
    if arch.path:
        network, strides = _path_network(arch.path)
        sub = _digraph(f"network-level path {list(arch.path)}")
        _cluster(graph, _add_lattice(sub, network, strides, {}, sorted(network.nodes), "path_", None), "path")
    return graph


def _network_grid(graph: graphviz.Digraph, stem: str, cells: list[tuple[str, int, int, str]],
                  low_level: int, aspp: str) -> None:
    """image -> stem -> cells (label, stride, channels, fill) -> ASPP -> decoder -> logits, top
    to bottom, each block in the column of its stride (invisible slots keep columns aligned)."""
    strides = [4 * 2 ** i for i in range(int(math.log2(max(s for _, s, _, _ in cells) // 4)) + 1)]
    box = {"shape": "box", "style": "rounded,filled", "width": "1.9", "height": "0.5"}
    rows: list[tuple[str, int, str, dict[str, str]]] = [
        ("image", 4, "image", {"shape": "plaintext"}), ("stem", 4, stem, {**box, "fillcolor": INPUT_FILL})]
    rows += [(f"cell{i}", stride, f"{label}\n{channels} channels", {**box, "fillcolor": fill})
             for i, (label, stride, channels, fill) in enumerate(cells)]
    rows += [("aspp", cells[-1][1], aspp, {**box, "fillcolor": OUTPUT_FILL}),
             ("decoder", 4, "decoder (stride 4)\n48-ch low-level + ASPP", {**box, "fillcolor": OUTPUT_FILL}),
             ("logits", 4, "logits, upsampled ×4", {"shape": "plaintext"})]
    grid = [[f"x{r}_{c}" for c in range(len(strides))] for r in range(len(rows) + 1)]
    for c, stride in enumerate(strides):
        graph.node(grid[0][c], f"stride {stride}", shape="plaintext", fontcolor="#555555", width="1.9")
    for r, (name, stride, label, attrs) in enumerate(rows, start=1):
        grid[r][strides.index(stride)] = name
        graph.node(name, label, **attrs)
        for slot in grid[r]:
            if slot != name:
                graph.node(slot, "", style="invis", width="1.9", height="0.5")
    for r, row in enumerate(grid):
        with graph.subgraph() as rank:
            rank.attr(rank="same")
            for c, slot in enumerate(row):
                rank.node(slot, group=f"c{c}")
                if c:
                    rank.edge(row[c - 1], slot, style="invis")  # fixes the left-to-right order
        if r:
            for above, slot in zip(grid[r - 1], row):  # keeps the columns straight
                graph.edge(above, slot, style="invis")
    names = [name for name, *_ in rows]
    for a, b in zip(names, names[1:]):
        graph.edge(a, b, **({"label": " ↑ to stride 4"} if a == "aspp" else {}))
    low = f"cell{low_level}" if low_level >= 0 else "stem"
    graph.edge(low, "decoder", style="dashed", color="#888888", label="low-level", weight="0")


def draw_network(arch: ArchSpec, *, F: int = 20, C: int = 32, layers: int = 12,
                 title: str | None = None) -> graphviz.Digraph:
    """The retrain network ``nasseg.models.build_from_arch`` makes of ``arch`` (defaults as
    there): stem, the cells along the path (lattice, filter multiplier ``F``) or the DARTS chain
    (``C``, ``layers``, reductions at 1/3 and 2/3), ASPP and DeepLabV3+ decoder; each cell
    labelled with its stride and output channels."""
    stem = "stem: 3 × conv3x3\n64/64/128 channels"
    if arch.path:
        width = len(lattice_cell(arch).concat)
        cells = [(f"cell {i}", s, width * F * s // 4, NODE_FILL) for i, s in enumerate(arch.path, 1)]
        low_level = next((i for i, s in enumerate(arch.path) if s > 4), len(arch.path)) - 1
        rates = [r * 16 // arch.path[-1] for r in (6, 12, 18)]
        default = f"{arch.name}: Auto-DeepLab network (F={F})"
    else:
        normal, reduce = darts_cells(arch)
        if layers < 3:
            raise NassegError(f"a DARTS network needs at least 3 layers (two are reductions), got {layers}")
        reductions, cells, width, stride = reduction_layers(layers), [], C, 4
        for i in range(layers):
            if i in reductions:
                width, stride = width * 2, stride * 2
            genotype = reduce if i in reductions else normal
            cells.append((f"{'reduction' if i in reductions else 'normal'} cell {i + 1}", stride,
                          len(genotype.concat) * width, "#f7c59f" if i in reductions else NODE_FILL))
        low_level, rates = reductions[0] - 1, [6, 12, 18]
        default = f"{arch.name}: DARTS segmentation network (C={C}, {layers} cells)"
    graph = _digraph(title or default, rankdir="TB", ranksep="0.25", nodesep="0.25")
    _network_grid(graph, stem, cells, low_level, f"ASPP, 256 channels\nrates {'/'.join(map(str, rates))}")
    return graph


# --- rendering --------------------------------------------------------------------------------------

def _graphviz(tool: str, args: Sequence[str], data: bytes, path: Path) -> bytes:
    """Run a graphviz program; a missing one or a failure is one NassegError line."""
    if shutil.which(tool) is None:
        raise NassegError(f"graphviz {tool!r} not found; install graphviz (apt-get install graphviz)")
    done = subprocess.run([tool, *args], input=data, capture_output=True)
    if done.returncode:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise NassegError(f"graphviz {tool} could not draw {path}: {lines[-1] if lines else done.returncode}")
    return done.stdout


def _boxed_layout(part: graphviz.Digraph, index: int, path: Path, margin: float = 10.0) -> bytes:
    """The dot layout of one part with its root turned into a cluster (box and title) whose
    box is ``margin`` points wider than the drawing, ready for gvpack."""
    text = _graphviz("dot", ["-Tdot"], part.source.encode(), path).decode()
    body = text.split("{", 1)[1]
    box = re.search(r'\bbb="([^"]+)"', body)
    if box:
        x0, y0, x1, y1 = (float(v) for v in box.group(1).split(","))
        wide = f'bb="{x0 - margin},{y0 - margin},{x1 + margin},{y1 + margin}"'
        body = body[:box.start()] + wide + body[box.end():]
    style = ", ".join(f'{k}="{v}"' for k, v in CLUSTER_STYLE.items() if k != "margin")
    return f"digraph {{\ngraph [sortv={index}];\nsubgraph cluster_part{index} {{\ngraph [{style}];\n{body}}}\n".encode()


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (*FORMATS, *SOURCE_SUFFIXES):
        raise NassegError(f"{path}: unknown picture format {suffix or '(no suffix)'!r}; expected "
                          f"{', '.join(list(FORMATS) + list(SOURCE_SUFFIXES))}")
    return suffix


def render(graph: graphviz.Digraph, output_path: str | Path) -> Path:
    """Write ``graph`` in the format its suffix names (.svg/.png/.pdf, or .dot/.gv: the source),
    via a temp file and a rename so a failed render leaves no half-written picture. A graph
    made of parts (``draw_arch``, ``show``) is laid out part by part and packed (gvpack)."""
    path = Path(output_path)
    suffix = _suffix(path)
    if suffix in SOURCE_SUFFIXES:
        return atomic_write_text(path, graph.source)
    options = [f"-T{FORMATS[suffix]}"] + (["-Gdpi=110"] if suffix == ".png" else [])
    parts = graph.__dict__.get("_nasseg_parts")
    if not parts:
        data = _graphviz(graph.engine, options, graph.source.encode(), path)
    else:
        laid_out = b"".join(_boxed_layout(part, i, path) for i, part in enumerate(parts))
        title = [f"-G{key}={graph.graph_attr[key]}" for key in ("label", "labelloc", "fontname", "fontsize")
                 if key in graph.graph_attr]
        packed = _graphviz("gvpack", ["-array_ul1", "-m16", *title], laid_out, path)
        data = _graphviz("neato", ["-n2", *options], packed, path)
    return atomic_write(path, lambda handle: handle.write(data))


# --- nasseg show ------------------------------------------------------------------------------------

def _check_kinds(kinds: Sequence[str] | str | None, available: Sequence[str], what: str) -> tuple[str, ...]:
    if kinds is None:
        return tuple(available)
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for kind in kinds:
        if kind not in available:
            raise NassegError(f"{what} has cell types {', '.join(available)}; got {kind!r}")
    return kinds


def _run_graph(run_dir: Path, epoch: int | None, kind: str | None) -> graphviz.Digraph:
    """A search run: decoded cells, the space cells weighted by that epoch's alphas and, for a
    lattice, the lattice with its betas and decoded path."""
    run = RunDir(run_dir)
    epochs = run.epochs_recorded()
    if not run.file("space.yaml").exists() or not epochs:
        raise NassegError(f"{run_dir}: not a search run directory (expected space.yaml and alphas/epoch_*.json)")
    arch = decode_run(run_dir, epoch)  # arch.yaml, else the last epoch, when epoch is None
    epoch = epoch if epoch is not None else arch.meta.get("epoch", epochs[-1])
    if epoch not in epochs:
        raise NassegError(f"{run_dir}: epoch {epoch} was not recorded; recorded epochs: {epochs[0]}..{epochs[-1]}")
    space = spaces.load(run.file("space.yaml"))
    payload = run.read_arch_weights(epoch)
    kinds = _check_kinds(kind, space.cell_types, f"space {space.name!r}")
    graph = _digraph(f"{run_dir}: {arch.name} (epoch {epoch})")
    for cell_kind in kinds:
        _cluster(graph, draw_cell(arch.cells[cell_kind], title=f"decoded {_cell_title(cell_kind)}",
                                  prefix=f"arch_{cell_kind}_"), f"arch_{cell_kind}")
        _cluster(graph, draw_space_cell(space, cell_kind, payload["alphas_raw"], prefix=f"space_{cell_kind}_",
                                        title=f"search-space {_cell_title(cell_kind)}, epoch {epoch}"),
                 f"space_{cell_kind}")
    if space.network.type == "lattice":
        title = f"lattice, softmax(beta) at epoch {epoch}, path {list(arch.path or [])}"
        _cluster(graph, draw_lattice(space, payload["betas_raw"], arch.path, title, "lat_"), "lattice")
    return graph


def _resolve_target(target: str) -> tuple[str, Any]:
    """("arch", ArchSpec) or ("space", SearchSpace) for a YAML file or a built-in name; a name
    that is both is the architecture unless written ``space:NAME``."""
    if target.startswith(("arch:", "space:")):
        what, name = target.split(":", 1)
        return what, (arches.load(name) if what == "arch" else spaces.load(name))
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        data = load_yaml(path)
        if arches.is_arch_file(data):
            return "arch", arches.load_arch(path)
        if spaces.is_space_file(data):
            return "space", spaces.load(path)
        raise NassegError(f"{path}: neither an ArchSpec (key cells) nor a search space (keys cell, network)")
    if target in arches.builtin_archs():
        return "arch", arches.load(target)
    if target in spaces.builtin_spaces():
        return "space", spaces.load(target)
    names = arches.builtin_archs() + spaces.builtin_spaces()
    raise NassegError(f"{target}: not a file, a run directory, a built-in architecture "
                      f"({', '.join(arches.builtin_archs())}) or a built-in space "
                      f"({', '.join(spaces.builtin_spaces())})" + did_you_mean(target, names))


def show(target: str, output: str | Path, *, epoch: int | None = None, kind: str | None = None) -> Path:
    """Draw ``target`` into ``output``: an ArchSpec (YAML or built-in name: its cells, and its
    path for a lattice), a search space (YAML, built-in name or ``space:NAME``: candidate cells,
    the lattice), or a search run directory (the architecture of ``epoch`` or its arch.yaml,
    the space cells weighted by that epoch's alphas, the lattice with betas and path)."""
    _suffix(Path(output))  # a bad format fails before any work
    if Path(target).is_dir():
        return render(_run_graph(Path(target), epoch, kind), output)
    if epoch is not None:
        raise NassegError(f"--epoch applies to a search run directory; {target} is not a directory")
    what, obj = _resolve_target(target)
    if what == "arch":
        return render(draw_arch(obj, kind), output)
    kinds = _check_kinds(kind, obj.cell_types, f"space {obj.name!r}")
    graph = _digraph(f"search space {obj.name}" + (f": {obj.description}" if obj.description else ""))
    for cell_kind in kinds:
        title = f"{_cell_title(cell_kind)} ({len(obj.cell_graph.edges)} candidate edges)"
        _cluster(graph, draw_space_cell(obj, cell_kind, title=title, prefix=f"{cell_kind}_"), cell_kind)
    if obj.network.type == "lattice":
        title = f"network-level lattice ({obj.network.layers} layers)"
        _cluster(graph, draw_lattice(obj, title=title, prefix="lat_"), "lattice")
    return render(graph, output)
