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
    from nasseg.shell.cli.main import main
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

    from nasseg.shell.cli.main import build_parser

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
    assert len(doc_commands("quickstart.md", "nasseg ")) >= 8  # docs/quickstart.md is among the docs checked


# The tiny settings added to each command of docs/quickstart.md's walkthrough (later flags win).
QUICKSTART_TINY = {
    "search": ["--no-ray", "--quiet", "--set", "epochs=1", "--set", "hessian.iters=2", "--set", "hessian.batch_size=2",
               "--set", "data.limit=4", "--set", "data.size=[32,48]", "--set", "data.batch_size=2"],
    "train": ["--size", "36x48", "--crop", "32x32", "--batch-size", "2", "--iters", "2", "--model-arg", "C=8",
              "--model-arg", "layers=3", "--device", "cpu", "--quiet"],
    "evaluate": ["--limit", "4", "--device", "cpu"],
}


def doc_commands(doc: str, prefix: str) -> list[list[str]]:
    """Every ``$ <prefix>...`` line of the console blocks of ``doc``, in order."""
    import shlex

    blocks = re.findall(r"```console\n(.*?)```", (DOCS / doc).read_text(), re.S)
    return [shlex.split(line[2:].split("  #")[0]) for block in blocks for line in block.splitlines()
            if line.startswith(f"$ {prefix}")]


def test_quickstart_make_targets_exist():
    makefile = (DOCS.parent / "Makefile").read_text()
    commands = doc_commands("quickstart.md", "make ")
    assert [c[1] for c in commands] == ["demo", "test"]
    for command in commands:
        assert re.search(rf"^{command[1]}:", makefile, re.M), command


def test_quickstart_walkthrough_runs(tmp_path, monkeypatch):
    """docs/quickstart.md from `nasseg data check` to the report with the retraining, in order, on
    the bundled images standing in for ../shared/data/camvid, with QUICKSTART_TINY added."""
    import json
    import shutil

    import pytest

    from nasseg.shell.cli.main import main
    from nasseg.data import DEMO_ROOT

    if shutil.which("dot") is None:
        pytest.skip("graphviz dot is not installed (nasseg show / report draw with it)")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "camvid").symlink_to(DEMO_ROOT)  # the same layout as CamVid's
    (tmp_path / "clone").mkdir()
    (tmp_path / "clone" / "jobs").symlink_to(DOCS.parent / "jobs")
    monkeypatch.chdir(tmp_path / "clone")
    commands = doc_commands("quickstart.md", "nasseg ")
    assert [c[1] for c in commands] == ["data", "search", "show", "report", "results", "train", "evaluate", "report"]
    run, reports = Path("runs/camvid_darts/seed0"), []
    for argv in commands:
        assert main(argv[1:] + QUICKSTART_TINY.get(argv[1], [])) == 0, argv
        if argv[1] == "report":
            reports.append((run / "report.html").read_text())
    assert (run / "arch.yaml").is_file() and Path("cells.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    retrain = json.loads(Path("runs/camvid_darts/arch/result.json").read_text())
    assert retrain["model"] == str(run / "arch.yaml") and retrain["iterations"] == 2
    first, second = (page[page.index("<section id='retrain'>"):] for page in reports)
    assert "No retraining of this architecture yet" in first
    assert "No retraining" not in second and f"{100 * retrain['miou']:.2f} %" in second


def test_search_doc_job_keys_are_a_valid_job():
    """The annotated job in docs/search.md lists real keys with valid values."""
    from nasseg.search import parse_job

    text = (DOCS / "search.md").read_text()
    block = re.search(r"## Job file keys.*?```yaml\n(.*?)```", text, re.S).group(1)
    config = parse_job(yaml.safe_load(block), "docs/search.md")
    assert config.hessian.tol == 0.01 and config.hessian.warm_start and not config.supernet.checkpoint
    assert config.hessian.method == "forward" and config.arch.fd == "central"
