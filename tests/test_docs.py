"""Examples in the docs stay true: the custom space in docs/dsl.md loads, builds and runs."""

import re
from pathlib import Path

import torch
import yaml

from nasseg import space as spaces
from nasseg.supernet import Supernet

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_custom_space_in_dsl_doc(tmp_path):
    text = (DOCS / "dsl.md").read_text()
    block = re.search(r"```yaml\n(name: my_space.*?)```", text, re.S).group(1)
    path = tmp_path / "my_space.yaml"
    path.write_text(block)
    space = spaces.load(path)
    assert space.op("wide_dil").params == {"dilation": 4}
    assert space.cell_graph.edges[3, 4]["ops"] == ("none", "skip_connect", "wide_dil")
    transitions = {d["transition"] for *_, d in space.network_graph.edges(data=True)}
    assert transitions == {"same", "down"}
    net = Supernet(space)
    out = net(torch.randn(2, 3, 48, 64))
    assert out.shape == (2, 11, 48, 64)
    assert yaml.safe_load(block)["network"]["layers"] == space.network.layers


def console_commands(doc: str, heading: str) -> list[list[str]]:
    """The `$ nasseg ...` lines of the first console block after ``heading``."""
    import shlex

    text = (DOCS / doc).read_text()
    block = re.search(re.escape(heading) + r".*?```console\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line[2:]) for line in block.splitlines() if line.startswith("$ nasseg ")]


def test_training_walkthrough_commands_run(tmp_path, monkeypatch):
    """docs/training.md "In one minute": every command exits 0 and leaves what the text says."""
    from nasseg.arch import load as load_arch
    from nasseg.cli import main
    from nasseg.data import DEMO_ROOT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "nasseg" / "data").mkdir(parents=True)
    (tmp_path / "nasseg" / "data" / "demo").symlink_to(DEMO_ROOT)
    load_arch("darts_v2").save(tmp_path / "runs" / "demo" / "seed0" / "arch.yaml")  # stands in for make demo's
    commands = console_commands("training.md", "## In one minute")
    assert len(commands) == 7
    for argv in commands:
        assert main(argv[1:] + (["--quiet"] if argv[1] in ("train", "predict") else [])) == 0, argv
    run = tmp_path / "runs" / "train" / "icnet_resnet50"
    assert (run / "final.pt").is_file() and (run / "tb").is_dir()
    logged = [line.split(",")[0] for line in open(run / "log.csv")]
    assert logged == ["iteration", "6", "8"]  # log_every 10: the last iteration of each session, once
    assert len(list((tmp_path / "runs" / "train" / "masks").glob("*_overlay.jpg"))) == 16
    assert (tmp_path / "runs" / "train" / "icnet.onnx").stat().st_size > 1e6
    assert (tmp_path / "runs" / "train" / "arch" / "final.pt").is_file()


def test_every_documented_command_parses():
    """Each `$ nasseg ...` line in README.md and docs/*.md is valid for today's command line."""
    import shlex

    from nasseg.cli import build_parser

    parser = build_parser()
    checked = 0
    for doc in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if line.startswith("$ nasseg "):
                argv = shlex.split(line[2:].split("  #")[0])
                try:
                    parser.parse_args(argv[1:])
                except SystemExit:
                    raise AssertionError(f"{doc.name}: {line}") from None
                checked += 1
    assert checked >= 20
