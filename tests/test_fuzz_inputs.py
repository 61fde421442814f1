"""Property-based tests of every reader of user input (issue 18: every bad input gets one clear line).

Hypothesis mutates valid documents and folders: values replaced by wrong types, out-of-range,
huge, NaN/inf, unicode or very long ones; keys deleted, unknown keys added, values wrapped in a
list or a mapping; the YAML text truncated, cut into random bytes, given a duplicate key or a tab.
Each reader (search spaces, search / training / HPO jobs, ArchSpecs, folder and list datasets)
must then either accept the document without any other exception, or raise NassegError with one
line that names the file, within a generous time limit (a hang or a huge allocation fails the test).
The command line is exercised in-process (``nasseg info``, ``nasseg data check``): exit 0 or 2
(1: problems listed by ``data check``), one ``nasseg: error:`` line, never ``internal error``.

Deterministic (``derandomize=True``, no example database): a failure reproduces in CI. The default
run takes about half a minute on one core; ``-m slow`` runs 2,000 examples per reader (about 6 minutes).
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import DataObject
from PIL import Image

from nasseg import space as spaces
from nasseg.arch import load as load_arch
from nasseg.data.registry import build_dataset
from nasseg.errors import NassegError
from nasseg.models import check_args
from nasseg.search.config import load_job
from nasseg.shell.cli.main import main
from nasseg.shell.runner.hpo import load_hpo_job
from nasseg.train.config import load_train_job

REPO = Path(__file__).resolve().parents[1]
TIME_LIMIT = 20  # seconds for one reader call: generous, only a hang or a blow-up gets near it


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# --- valid starting points -------------------------------------------------------------------------

TINY_SPACE = {
    "name": "fuzz_chain",
    "ops": ["none", "skip_connect", "sep_conv_3x3", {"name": "wide", "op": "conv_3x3", "dilation": 2},
            {"name": "noise", "op": "noise", "mean": 0.0, "std": 1.0}],
    "cell": {"inputs": 2, "nodes": 2, "edges": "dense", "combine": "sum", "outputs": "intermediate",
             "decode": {"k": 2, "exclude": ["none"]}},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1], "reduction_mode": "cell",
                "stem": {"type": "three_conv", "channels": [8, 8, 8], "strides": [2, 1, 2]},
                "head": {"type": "aspp", "rates": [48], "channels": 8}, "classes": 11},
}
TINY_LATTICE = {
    "name": "fuzz_lattice",
    "ops": ["none", "skip_connect", "sep_conv_3x3"],
    "cell": {"nodes": 2, "edges": [{"from": 0, "to": 2, "ops": ["skip_connect", "sep_conv_3x3"]},
                                   {"from": 1, "to": 2}, {"from": 1, "to": 3}, {"from": 2, "to": 3}],
             "outputs": [2, 3], "decode": {"k": 1}},
    "network": {"type": "lattice", "F": 2, "layers": 2, "strides": [4, 8], "transitions": ["same", "down"],
                "stem": {"type": "three_conv", "channels": [4, 4, 8]}, "head": {"type": "aspp", "rates": [96]},
                "classes": 11},
}
SEARCH_JOB = {
    "name": "fuzz", "space": "darts", "algorithm": "darts", "order": "first",
    "data": {"dataset": "camvid_demo", "size": [32, 48], "crop": [32, 32], "flip": True, "batch_size": 2,
             "val_batch_size": 4, "limit": 8},
    "epochs": 3, "seeds": [0, 1],
    "weights": {"lr": 0.025, "lr_min": 0.001, "momentum": 0.9, "weight_decay": 3.0e-4, "grad_clip": 5},
    "arch": {"lr": 3.0e-4, "betas": [0.5, 0.999], "weight_decay": 1.0e-3, "start_epoch": 0, "fd_radius": 0.01,
             "fd": "central"},
    "hessian": {"every": 1, "iters": 4, "batch_size": 2, "tol": 0.01, "warm_start": True, "method": "forward",
                "epsilon": 1.0e-4},
    "early_stop": {"rule": "paper", "window": 2, "ratio": 0.75, "ada": {"factor": 10, "max_rollbacks": 2}},
    "supernet": {"checkpoint": False, "prune_below": 0.0, "channels_last": True, "amp": False},
    "alpha_limit": 1000, "device": "cpu", "resources": {"cpus": 1, "gpus": 0}, "max_failures": 2,
}
TRAIN_JOB = {
    "name": "fuzz_train", "model": "deeplabv3plus_mobilenetv2", "model_args": {"output_stride": 16},
    "data": {"dataset": "camvid_demo", "train_split": "train", "val_split": "val", "size": [64, 80],
             "crop": [48, 48], "scale": [0.5, 2.0], "flip": True, "jitter": 0.1, "batch_size": 2, "workers": 0},
    "iters": 10, "optim": {"lr": 0.01, "momentum": 0.9, "weight_decay": 4.0e-5, "nesterov": False, "power": 0.9,
                           "warmup_iters": 2, "warmup_ratio": 0.1, "grad_clip": 0},
    "loss_weights": None, "amp": True, "checkpoint_every": 5, "eval_every": 0, "log_every": 1, "seed": 0,
    "device": "cpu",
}
ARCH_TRAIN_JOB = {**TRAIN_JOB, "name": "fuzz_arch", "model": str(REPO / "nasseg" / "archs" / "darts_v2.yaml"),
                  "model_args": {"C": 8, "layers": 5}}
HPO_JOB = {
    "kind": "hpo", "name": "fuzz_hpo", "epochs": 2, "seed": 0, "trials": 4,
    "search": {k: v for k, v in SEARCH_JOB.items() if k not in ("name", "seeds", "epochs")},
    "objectives": [{"val_miou": "max"}, {"macs": "min"}],
    "space": {"weights.lr": {"loguniform": [1.0e-3, 1.0e-1]}, "arch.lr": {"uniform": [1.0e-4, 1.0e-3]},
              "data.batch_size": {"choice": [2, 4]}, "hessian.iters": {"randint": [2, 6]}},
    "asha": {"grace_period": 1, "reduction_factor": 2}, "max_concurrent": 2, "cost_input": [64, 64],
}
ARCHS = {name: yaml.safe_load((REPO / "nasseg" / "archs" / f"{name}.yaml").read_text())
         for name in ("darts_v2", "autodeeplab")}


# --- mutations -------------------------------------------------------------------------------------

SPECIAL = [0, -1, 1, 2, -0.0, 0.5, -3, 1e-300, 1e308, -1e308, math.nan, math.inf, -math.inf, 2**31, 2**63,
           10**30, -(10**30), True, False, None, "", " ", "abc", "1e-3", ".nan", "none", "x" * 3000,
           "é✓🙂", "../..", "/etc/passwd", "a.b", "[1, 2]", "\x00", "\t", [], {}, [[]], {"": None}]
SCALARS = st.one_of(st.sampled_from(SPECIAL), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.booleans())
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), st.dictionaries(st.text(max_size=6), SCALARS, max_size=3))
KEY_OPS = ("replace", "replace", "replace", "delete", "unknown_key", "wrap_list", "wrap_mapping")
TEXT_OPS = ("as_is",) * 6 + ("truncate", "random_bytes", "insert_bytes", "duplicate_line", "tab", "latin1", "empty")


def key_paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path into ``doc`` (mapping keys and list indices), deepest first, the root last (hypothesis
    draws the first entries of a list most often: the leaves, where most mistakes are made)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from key_paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from key_paths(value, prefix + (i,))
    yield prefix


def _set(doc: Any, path: tuple, change: Callable[[Any, Any], Any]) -> Any:
    """``doc`` with the value at ``path`` (its parent and key) passed through ``change``."""
    if not path:
        return change(None, doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    change(parent, path[-1])
    return doc


def mutate_document(data: DataObject, doc: Any) -> Any:
    """One to three structural mutations of a deep copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(list(key_paths(doc))), label="path")
        op = data.draw(st.sampled_from(KEY_OPS), label="op")
        value = copy.deepcopy(data.draw(VALUES, label="value"))  # SPECIAL holds shared lists and dicts

        def change(parent: Any, key: Any) -> Any:
            if parent is None:  # the root: the whole document becomes a value or a wrapped document
                return value if op in ("replace", "delete") else [doc] if op == "wrap_list" else {"x": doc}
            if op == "delete":
                del parent[key]
            elif op == "unknown_key" and isinstance(parent, dict):
                parent[f"{key}_{value!s:.8}"] = value
            elif op == "wrap_list":
                parent[key] = [parent[key]]
            elif op == "wrap_mapping":
                parent[key] = {str(key): parent[key]}
            else:
                parent[key] = value
            return doc

        doc = _set(doc, path, change)
    return doc


def mutated_text(data: DataObject, doc: Any) -> bytes:
    """The YAML of a mutated ``doc``, sometimes damaged as text or bytes."""
    text = yaml.safe_dump(mutate_document(data, doc), allow_unicode=True, sort_keys=False).encode()
    op = data.draw(st.sampled_from(TEXT_OPS), label="text op")
    if op == "truncate":
        return text[:len(text) - data.draw(st.integers(1, max(1, len(text))), label="cut")]
    if op == "random_bytes":
        return data.draw(st.binary(min_size=1, max_size=400), label="bytes")
    if op == "insert_bytes":
        at = data.draw(st.integers(0, len(text)), label="at")
        return text[:at] + data.draw(st.binary(min_size=1, max_size=20), label="inserted") + text[at:]
    if op == "duplicate_line":
        lines = text.splitlines(keepends=True)
        line = data.draw(st.sampled_from(lines), label="line") if lines else b"a: 1\n"
        return text + line
    if op == "tab":
        return text.replace(b"  ", b"\t", 1)
    if op == "latin1":
        return text + "# caf\xe9\n".encode("latin-1")
    if op == "empty":
        return b""
    return text


# --- checking a reader -----------------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Fail (instead of hanging the test run) when the body runs longer than ``seconds``."""
    def expired(*_: Any) -> None:
        raise TimeoutError(f"a reader ran longer than {seconds} s: a hang or a blow-up")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def accepts_or_names(read: Callable[[], Any], file: Path) -> None:
    """``read()`` returns, or raises NassegError: one line naming ``file``. Anything else fails."""
    start = time.monotonic()
    with time_limit(TIME_LIMIT):
        try:
            read()
        except NassegError as exc:
            message = str(exc)
            assert message.startswith(str(file)), message
            assert "\n" not in message and len(message) < 2000, message
    assert time.monotonic() - start < TIME_LIMIT


def cli_line(capsys: pytest.CaptureFixture[str], argv: list[str], file: Path, ok: tuple[int, ...] = (0,)) -> None:
    """``nasseg ARGV`` in-process: an exit status in ``ok``, or 2 with one error line naming ``file``."""
    with time_limit(TIME_LIMIT):
        code = main(argv)
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, err
    if code == 2:
        lines = [line for line in err.splitlines() if line.startswith("nasseg")]
        assert len(lines) == 1, err
        assert lines[0].startswith(f"nasseg: error: {file}"), lines[0]
    else:
        assert code in ok, err


def write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


# --- the readers -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per test module; each example overwrites the files it writes there."""
    return tmp_path_factory.mktemp("fuzz")


def read_space(path: Path) -> None:
    space = spaces.load(path)
    assert space.cell_graph.number_of_nodes() and space.network_graph.number_of_nodes()


def read_arch(path: Path) -> None:
    check_args(load_arch(path), {})  # the retrain network's builder takes it as it is


Capture = pytest.CaptureFixture[str]


def space_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    base = data.draw(st.sampled_from([TINY_SPACE, TINY_LATTICE]), label="base")
    path = write(scratch, "space.yaml", mutated_text(data, base))
    accepts_or_names(lambda: read_space(path), path)


def info_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    base = data.draw(st.sampled_from([TINY_SPACE, TINY_LATTICE, ARCHS["darts_v2"]]), label="base")
    path = write(scratch, "target.yaml", mutated_text(data, base))
    cli_line(capsys, ["info", str(path), "--input", "32x32"], path)


def search_job_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    path = write(scratch, "search.yaml", mutated_text(data, SEARCH_JOB))
    accepts_or_names(lambda: load_job(path), path)


def train_job_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    base = data.draw(st.sampled_from([TRAIN_JOB, ARCH_TRAIN_JOB]), label="base")
    path = write(scratch, "train.yaml", mutated_text(data, base))
    accepts_or_names(lambda: load_train_job(path), path)


def hpo_job_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    path = write(scratch, "hpo.yaml", mutated_text(data, HPO_JOB))
    accepts_or_names(lambda: load_hpo_job(path), path)


def arch_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    base = data.draw(st.sampled_from(list(ARCHS.values())), label="base")
    path = write(scratch, "arch.yaml", mutated_text(data, base))
    accepts_or_names(lambda: read_arch(path), path)


# --- data folders ----------------------------------------------------------------------------------

DATASET_YAML = {"classes": ["road", "car", "sky"], "ignore_index": 255,
                "palette": [[128, 64, 128], [0, 0, 142], [70, 130, 180]]}
FILE_OPS = ("keep",) * 5 + ("truncate", "random_bytes", "empty", "text", "rgb_label", "wrong_size", "out_of_range",
                            "delete", "directory")


def make_folder_dataset(root: Path, data: DataObject, layout: str) -> None:
    """A 2 + 2 image folder (or list) dataset whose dataset.yaml and files may be damaged."""
    root.mkdir(parents=True)
    (root / "dataset.yaml").write_bytes(mutated_text(data, DATASET_YAML) if data.draw(st.booleans(), label="bad yaml")
                                        else yaml.safe_dump(DATASET_YAML).encode())
    rng = np.random.default_rng(0)
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for split in lines:
        for i in range(2):
            image, label = root / "images" / split / f"{i}.png", root / "labels" / split / f"{i}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(image)
            Image.fromarray(rng.integers(0, 3, (12, 16), dtype=np.uint8)).save(label)
            damage(data, data.draw(st.sampled_from([image, label]), label="file"))
            lines[split].append(f"images/{split}/{i}.png labels/{split}/{i}.png")
    if layout == "list":
        for split, entries in lines.items():
            (root / f"{split}.txt").write_bytes(mutated_text(data, entries) if data.draw(st.booleans(), label="bad list")
                                                else "\n".join(entries).encode())


def damage(data: DataObject, path: Path) -> None:
    op = data.draw(st.sampled_from(FILE_OPS), label="file op")
    content = path.read_bytes()
    if op == "truncate":
        path.write_bytes(content[:data.draw(st.integers(0, len(content) - 1), label="cut")])
    elif op == "random_bytes":
        path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
    elif op == "empty":
        path.write_bytes(b"")
    elif op == "text":
        path.write_text("not an image")
    elif op == "rgb_label":
        Image.fromarray(np.zeros((12, 16, 3), dtype=np.uint8)).save(path)
    elif op == "wrong_size":
        Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(path)
    elif op == "out_of_range":
        Image.fromarray(np.full((12, 16), 9, dtype=np.uint8)).save(path)
    elif op == "delete":
        path.unlink()
    elif op == "directory":
        path.unlink()
        path.mkdir()


def read_every_item(spec: str) -> None:
    for split in ("train", "val"):
        dataset = build_dataset(spec, split)
        for i in range(len(dataset)):
            dataset[i]


def data_folder_example(scratch: Path, capsys: Capture, data: DataObject) -> None:
    layout = data.draw(st.sampled_from(["folder", "list"]), label="layout")
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        root = Path(folder) / "data"
        make_folder_dataset(root, data, layout)
        accepts_or_names(lambda: read_every_item(f"{layout}:{root}"), root)
        cli_line(capsys, ["data", "check", f"{layout}:{root}", "--quiet"], root, ok=(0, 1))


EXAMPLES = {space_example: 400, info_example: 40, search_job_example: 400, train_job_example: 400,
            hpo_job_example: 200, arch_example: 400, data_folder_example: 150}  # about 30 s on one core


def run_examples(example: Callable[[Path, Capture, DataObject], None], scratch: Path, capsys: Capture,
                 count: int) -> None:
    @given(st.data())
    @fuzz_settings(count)
    def run(data: DataObject) -> None:
        example(scratch, capsys, data)

    run()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.__name__ for e in EXAMPLES])
def test_every_reader(example: Callable[[Path, Capture, DataObject], None], scratch: Path, capsys: Capture) -> None:
    run_examples(example, scratch, capsys, EXAMPLES[example])


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.__name__ for e in EXAMPLES])
def test_every_reader_at_length(example: Callable[[Path, Capture, DataObject], None], scratch: Path,
                                capsys: Capture) -> None:
    """The same properties over 2,000 examples per reader (minutes; ``pytest -m slow``)."""
    run_examples(example, scratch, capsys, 2000)
