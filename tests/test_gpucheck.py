"""`nasseg gpucheck`: the whole check with the CPU on both sides (every comparison exact), the
one-line refusal without CUDA, the comparison rules, the table files and a check that raises."""

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
import torch

from nasseg.shell.cli.main import main
from nasseg.shell.gpucheck import CHECKS
from nasseg.shell.gpucheck import run as gpucheck_run
from nasseg.shell.gpucheck.compare import FAIL, INFO, PASS, bounded, equal, relative_difference, within
from nasseg.shell.gpucheck.lockstep import update_difference

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()


def _run(out: Path, *extra: str) -> int:
    return main(["gpucheck", "--device", "cpu", "--quick", "--threads", "1", "--quiet", "--out", str(out), *extra])


def _comparisons(out: Path) -> list[dict]:
    payload = json.loads((out / "gpucheck.json").read_text())
    return [c for check in payload["checks"] for c in check["comparisons"]]


def _assert_exact(out: Path, checks: tuple[str, ...]) -> None:
    comparisons = _comparisons(out)
    assert {c["check"] for c in comparisons} == set(checks)
    for c in comparisons:
        assert c["status"] in (PASS, INFO, "skipped"), c
        if c["difference"] is not None:  # the same computation on the same device: bit for bit
            assert c["difference"] == 0, c
    nccl = [c for c in comparisons if c["check"] == "nccl"]
    assert nccl and nccl[0]["status"] == "skipped" and "NCCL needs CUDA" in nccl[0]["note"]


def test_cpu_on_both_sides_every_comparison_is_exact(tmp_path, capsys):
    out = tmp_path / "check"
    assert _run(out, "--bench-suites", "darts") == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# nasseg GPU check: cpu") and "| search | step loss |" in printed
    _assert_exact(out, CHECKS)
    comparisons = _comparisons(out)
    quantities = {(c["check"], c["quantity"]) for c in comparisons}
    for expected in [("search", "decoded architecture, every epoch"), ("hessian", "eigenvalue, exact products"),
                     ("train_amp", "weight update (relative L2 difference)")]:
        assert expected in quantities
    bench = next(c for c in comparisons if c["check"] == "bench")
    assert bench["measured"].split(" of ")[0] == bench["measured"].split(" of ")[1]
    rows = list(csv.DictReader((out / "gpucheck.csv").open()))
    assert len(rows) == len(comparisons) and float(rows[0]["cpu_seconds"]) > 0
    assert (out / "bench.csv").read_text().startswith("suite,")
    # the compared runs are kept under OUT/runs, nothing is written elsewhere
    assert (out / "runs" / "device" / "search" / "arch.yaml").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check"]


@pytest.mark.slow
def test_default_sizes_on_the_cpu_every_comparison_is_exact(tmp_path):
    out = tmp_path / "check"
    assert main(["gpucheck", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    _assert_exact(out, CHECKS)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_refuses_cuda_in_one_line_where_there_is_none(device, tmp_path, capsys):
    assert main(["gpucheck", "--device", device, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nasseg: error: no CUDA device here: torch ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device 'tpu': expected cuda, cuda:N or cpu"),
    (["--device", "cpu", "--checks", "search,warp"], "--checks: unknown check warp"),
    (["--device", "cpu", "--bench-suites", "nope"], "--suite: unknown suite nope"),
])
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["gpucheck", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_wrapper_script_refuses_without_cuda():
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("nasseg: error: no CUDA device here:"), proc.stderr


def test_a_check_that_raises_is_an_error_row_and_the_rest_still_run(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore")

    monkeypatch.setitem(gpucheck_run.CHECK_RUNS, "latency", broken)
    out = tmp_path / "check"
    assert _run(out, "--checks", "nccl,latency") == 1
    rows = {c["check"]: c for c in _comparisons(out)}
    assert rows["latency"]["status"] == "error"
    assert rows["latency"]["note"] == "RuntimeError: CUDA error: an illegal memory access was encountered more"
    assert rows["nccl"]["status"] == "skipped"
    assert "**some checks failed**" in (out / "gpucheck.md").read_text()


def test_comparison_rules():
    assert relative_difference(2.0, 2.0) == 0 and relative_difference(0.0, 1e-3) == 1e-3
    assert relative_difference(1.0, math.nan) == math.inf
    row = within("c", "q", [1.0, 2.0], [1.0, 2.0004], 1e-4)
    assert row.status == FAIL and row.difference == pytest.approx(2e-4)
    assert within("c", "q", [1.0, 2.0], [1.0, 2.0001], 2e-4).status == PASS
    assert within("c", "q", [1.0, 2.0], [1.0], 1.0).status == FAIL  # a missing value is a failure
    assert within("c", "q", [1.0], [math.nan], 1.0).status == FAIL
    assert bounded("c", "q", [0.1, 0.2], 0.15).status == FAIL and bounded("c", "q", [0.1], None).status == INFO
    assert equal("c", "q", ("a",), ("a",), "a", "a").status == PASS
    assert equal("c", "q", ("a",), ("b",), "a", "b").status == FAIL
    assert equal("c", "q", ("a",), ("b",), "a", "b", required=False).status == INFO


def test_update_difference():
    before = {"w": torch.zeros(3)}
    reference = {"w": torch.tensor([1.0, 0.0, 0.0])}
    assert update_difference(before, reference, {"w": torch.tensor([1.0, 0.0, 0.0])}, ["w"]) == 0
    assert update_difference(before, reference, before, ["w"]) == 1  # no update at all
    assert update_difference(before, reference, {"w": torch.tensor([-1.0, 0.0, 0.0])}, ["w"]) == 2
