"""Safe by construction: nasseg writes only under --out, deletes only run directories it created
(the .nasseg-run marker, or a legacy run holding nothing but nasseg's files), and every bad file
it reads is one line naming that file, with exit status 2 (1 for `data check` problems), never a
traceback. The reported data-loss cases are reproduced here with files planted around them."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import pytest
import torch
import yaml

from nasseg.errors import NassegError, worker_error_message
from nasseg.rundirs import (MARKER, RunNameError, check_run_name, claim_run_dir, read_marker, remove_run_dir,
                            run_path)
from nasseg.shell.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "nasseg" / "data" / "demo"
DEMO_JOB = ROOT / "nasseg" / "jobs" / "demo.yaml"
TRAIN_FLAGS = ["--data", "camvid_demo", "--size", "90x120", "--crop", "64x64", "--batch-size", "2",
               "--iters", "2", "--quiet"]


def plant(folder: Path, name: str = "important.txt") -> Path:
    """A user's file that nasseg must never touch."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / name
    file.write_text("keep me\n")
    return file


def survives(*files: Path) -> bool:
    return all(f.is_file() and f.read_text() == "keep me\n" for f in files)


def one_error_line(capsys) -> str:
    """stderr of the last command: exactly one line, nasseg's error line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nasseg: error: "), err
    return err[0]


# --- run names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, why", [
    ("/tmp/victim", "is an absolute path"), ("..", "points to the folder above OUT"), (".", "is OUT itself"),
    ("../../x", "contains a path separator"), ("a/b", "contains a path separator"),
    ("a\\b", "contains a path separator"), ("", "is empty"), ("a..b", "contains '..'"),
    ("my run", "contains ' '"), (".hidden", "does not start with"), ("x" * 129, "longer than 128"),
])
def test_run_names_are_plain_folder_names(name, why):
    with pytest.raises(RunNameError, match=why) as error:
        check_run_name(name)
    assert isinstance(error.value, NassegError) and isinstance(error.value, ValueError)
    assert check_run_name("camvid_darts-2.b+c=d") == "camvid_darts-2.b+c=d"
    assert run_path("runs", "demo") == Path("runs/demo")


def test_every_place_that_makes_a_run_dir_checks_the_name(tmp_path):
    from nasseg.search import run_dir_for
    from nasseg.train.trainer import prepare_run_dir

    bad = types.SimpleNamespace(name=str(tmp_path / "victim"))
    with pytest.raises(RunNameError, match="is an absolute path"):
        prepare_run_dir(bad, tmp_path / "out", resume=False, restart=True)
    with pytest.raises(RunNameError, match="points to the folder above OUT"):
        run_dir_for(types.SimpleNamespace(name=".."), 0, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "victim").exists()


# --- the reported data-loss cases -----------------------------------------------------------------

def test_train_job_with_an_absolute_name_and_restart_deletes_nothing(tmp_path, capsys):
    """Case 1: `name:` an absolute path + --restart deleted that directory."""
    victim = [plant(tmp_path / "victim"), plant(tmp_path / "victim" / "sub")]
    around = [plant(tmp_path, "next_to_out.txt"), plant(tmp_path / "out", "inside_out.txt")]
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": str(tmp_path / "victim"), "model": "icnet_resnet50",
                                   "data": {"dataset": "camvid_demo", "size": [90, 120], "crop": [64, 64],
                                            "batch_size": 2}, "iters": 2}))
    assert main(["train", str(job), "--out", str(tmp_path / "out"), "--restart", "--quiet"]) == 2
    assert str(tmp_path / "victim") in one_error_line(capsys)
    assert survives(*victim, *around)
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["important.txt", "sub"]


def test_train_name_dotdot_with_restart_does_not_empty_the_parent_of_out(tmp_path, capsys):
    """Case 2: --out T/v3/train --name .. --restart emptied T/v3."""
    planted = [plant(tmp_path / "v3"), plant(tmp_path / "v3" / "train", "in_out.txt"), plant(tmp_path, "above.txt")]
    arch = ROOT / "nasseg" / "archs" / sorted(p.name for p in (ROOT / "nasseg" / "archs").glob("*.yaml"))[0]
    code = main(["train", str(arch), *TRAIN_FLAGS, "--out", str(tmp_path / "v3" / "train"), "--name", "..",
                 "--restart"])
    assert code == 2
    assert "'..'" in one_error_line(capsys)
    assert survives(*planted)


@pytest.mark.parametrize("name", ["../../../somewhere", "ABSOLUTE"])
@pytest.mark.parametrize("ray", [False, True])
def test_search_job_name_cannot_escape_out(tmp_path, capsys, name, ray):
    """Case 3: a search job's name escaped --out; with --restart its seed0 was deleted."""
    target = tmp_path / "somewhere" if name == "ABSOLUTE" else (tmp_path / "a" / "b" / "c" / name).resolve()
    name = str(target) if name == "ABSOLUTE" else name
    planted = [plant(target / "seed0"), plant(target / "seed0" / "checkpoints", "last.pt"), plant(tmp_path, "x.txt")]
    job = tmp_path / "job.yaml"
    job.write_text(DEMO_JOB.read_text().replace("name: demo", f"name: {name}"))
    out = tmp_path / "a" / "b" / "c"
    argv = ["search", str(job), "--out", str(out), "--restart", "--quiet"] + ([] if ray else ["--no-ray"])
    assert main(argv) == 2
    assert name in one_error_line(capsys)
    assert survives(*planted)
    assert not out.exists() or not any(out.iterdir())


# --- ownership: what --restart may delete ---------------------------------------------------------

def test_restart_refuses_a_folder_nasseg_did_not_create(tmp_path, capsys):
    mine = [plant(tmp_path / "out" / "icnet_resnet50"), plant(tmp_path / "out" / "icnet_resnet50" / "sub")]
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(tmp_path / "out"), "--restart"]) == 2
    line = one_error_line(capsys)
    assert line == (f"nasseg: error: {tmp_path / 'out' / 'icnet_resnet50'} was not created by nasseg (no "
                    f"{MARKER} marker); refusing to delete it — remove it yourself or pick another --out/name")
    assert survives(*mine)
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(tmp_path / "out")]) == 2
    assert "refusing to write into it" in one_error_line(capsys)
    assert survives(*mine)


def test_restart_of_a_real_run_works_and_keeps_what_is_around_it(tmp_path, capsys):
    out = tmp_path / "out"
    around = [plant(out), plant(tmp_path)]
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(out)]) == 0
    run = out / "icnet_resnet50"
    assert read_marker(run)["kind"] == "train" and (run / "final.pt").is_file()
    (run / "leftover.txt").write_text("from the first run")  # inside the run: --restart discards it
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(out), "--restart"]) == 0
    assert (run / "final.pt").is_file() and not (run / "leftover.txt").exists()
    assert read_marker(run)["kind"] == "train"
    assert survives(*around)


def test_a_run_of_another_kind_is_not_restarted_as_this_one(tmp_path):
    search_run = claim_run_dir(tmp_path / "demo" / "seed0", "search")
    kept = plant(search_run)
    with pytest.raises(NassegError, match="is a nasseg search run, not a training run; refusing to delete it"):
        remove_run_dir(search_run, "train")
    assert survives(kept)


def test_symbolic_links_are_never_followed_into_a_delete(tmp_path):
    victim = plant(claim_run_dir(tmp_path / "elsewhere", "train"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "run").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(NassegError, match="is a symbolic link; refusing to delete it"):
        remove_run_dir(tmp_path / "out" / "run", "train")
    assert survives(victim)


def legacy_train_run(folder: Path) -> Path:
    """A training run as nasseg wrote it before run markers."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("name: icnet_resnet50\n")
    (folder / "log.csv").write_text("iteration,loss\n1,2.0\n")
    (folder / "checkpoints" / "last.pt").write_bytes(b"old")
    return folder


def test_legacy_runs_restart_only_when_they_hold_nothing_but_nasseg_files(tmp_path, capsys):
    out = tmp_path / "out"
    run = legacy_train_run(out / "icnet_resnet50")
    notes = plant(run, "notes.txt")
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(out), "--restart"]) == 2
    line = one_error_line(capsys)
    assert "made before run markers" in line and "notes.txt, which nasseg did not write" in line
    assert survives(notes) and (run / "checkpoints" / "last.pt").read_bytes() == b"old"
    notes.unlink()
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(out), "--restart"]) == 0
    assert read_marker(run)["kind"] == "train" and (run / "final.pt").is_file()


def legacy_search_run(folder: Path) -> Path:
    (folder / "alphas").mkdir(parents=True)
    for name in ("config.yaml", "space.yaml", "metrics.csv"):
        (folder / name).write_text("x: 1\n")
    return folder


def test_legacy_experiments_are_recognised_by_their_runs(tmp_path):
    """A search experiment from before markers: its seeds and a retrain next to them (quickstart's
    layout) are nasseg's; an HPO experiment's trials too, down to the files inside them."""
    experiment = tmp_path / "camvid_darts"
    legacy_search_run(experiment / "seed0")
    legacy_train_run(experiment / "arch")
    assert claim_run_dir(experiment, "experiment") == experiment and read_marker(experiment) is None
    notes = plant(experiment / "seed0", "notes.txt")
    with pytest.raises(NassegError, match="seed0/notes.txt, which nasseg did not write; refusing to write into it"):
        claim_run_dir(experiment, "experiment")
    hpo = tmp_path / "hpo"
    legacy_search_run(hpo / "trial_0001")
    (hpo / "experiment.yaml").write_text("kind: hpo\n")
    (hpo / "optuna.db").write_bytes(b"")
    kept = plant(hpo / "trial_0001", "notes.txt")
    with pytest.raises(NassegError, match="HPO experiment made before run markers .* trial_0001/notes.txt"):
        remove_run_dir(hpo, "hpo")
    assert survives(kept, notes)
    kept.unlink()
    remove_run_dir(hpo, "hpo")
    assert not hpo.exists()


def test_a_search_restart_deletes_all_of_its_seeds_or_none(tmp_path, capsys):
    """--restart of seeds 0 and 1: seed1 is not nasseg's, so seed0 is not deleted either."""
    job = tmp_path / "job.yaml"
    job.write_text(DEMO_JOB.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    seed0 = claim_run_dir(tmp_path / "out" / "demo" / "seed0", "search")
    (seed0 / "metrics.csv").write_text("epoch\n1\n")
    foreign = plant(tmp_path / "out" / "demo" / "seed1")
    assert main(["search", str(job), "--out", str(tmp_path / "out"), "--restart", "--no-ray", "--quiet"]) == 2
    assert "seed1 was not created by nasseg" in one_error_line(capsys)
    assert (seed0 / "metrics.csv").is_file() and survives(foreign)


@pytest.mark.parametrize("command", [["train", "icnet_resnet50", "--data", "camvid_demo"],
                                     ["search", str(DEMO_JOB)],
                                     ["submit", str(DEMO_JOB), "--address", "http://127.0.0.1:1"]])
def test_resume_and_restart_together_are_refused_alike_by_every_command(tmp_path, capsys, command):
    assert main([*command, "--out", str(tmp_path), "--resume", "--restart"]) == 2
    assert one_error_line(capsys) == ("nasseg: error: --resume continues an existing run and --restart "
                                      "discards it; pass one of them")
    assert not any(tmp_path.iterdir())


# --- images and labels ----------------------------------------------------------------------------

def write_png_bomb(path: Path, width: int = 20000, height: int = 20000) -> int:
    """A 1-bit palette PNG of width x height zeros: ~50 KB on disk, 400 million pixels decoded.
    Rows are streamed through zlib, so making it needs no image in memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0)  # bit depth 1, palette
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff")
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    path.write_bytes(data)
    return len(data)


@pytest.fixture
def bomb_dataset(tmp_path) -> tuple[str, Path]:
    """A 4-image CamVid split copied from the demo set, the first label replaced by a PNG bomb."""
    root = tmp_path / "camvid"
    for split in ("train", "val"):
        lines = (DEMO / f"{split}.txt").read_text().splitlines()[:4]
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            for rel in line.split():
                (root / rel).write_bytes((DEMO / rel).read_bytes())
    bomb = root / (DEMO / "train.txt").read_text().split()[1]
    assert write_png_bomb(bomb) < 400_000
    return f"camvid:{root}", bomb


def test_a_decompression_bomb_is_a_problem_of_its_file_in_data_check(bomb_dataset, capsys):
    spec, bomb = bomb_dataset
    assert main(["data", "check", spec, "--quiet"]) == 1
    out = capsys.readouterr().out
    assert f"{bomb}: label of 400,000,000 pixels, over nasseg's limit of 67,108,864; not decoded" \
        in out
    assert "train: 4 items" in out and "1 problems" in out


def test_training_on_a_decompression_bomb_stops_with_one_line_naming_it(bomb_dataset, tmp_path, capsys):
    spec, bomb = bomb_dataset
    flags = ["--data", spec, "--size", "90x120", "--crop", "64x64", "--batch-size", "2", "--iters", "2", "--quiet"]
    assert main(["train", "icnet_resnet50", *flags, "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"nasseg: error: {bomb}: label of 400,000,000 pixels") and "not decoded" in line


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    """Between nasseg's limit (8192x8192) and PIL's own (2 x 89 million pixels): nasseg's check."""
    from nasseg.train.predict import read_image

    write_png_bomb(tmp_path / "big.png", 9000, 9000)
    with pytest.raises(NassegError, match=r"big.png: image of 9000x9000 = 81,000,000 pixels, over nasseg's limit"):
        read_image(tmp_path / "big.png")


def test_errors_from_dataloader_workers_keep_only_their_own_line():
    wrapped = ("Caught NassegError in DataLoader worker process 0.\n"
               "Original Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise NassegError(...)\n'
               "nasseg.errors.NassegError: a.png: label not found\n")
    assert worker_error_message(wrapped) == "a.png: label not found"
    assert worker_error_message("plain message") == "plain message"


# --- checkpoints ----------------------------------------------------------------------------------

class Payload:
    """Unpickling this would run code: it writes the file ``proof`` names."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):
        return exec, (f"open({str(self.proof)!r}, 'w').write('code ran')",)


def write_hostile(path: Path, proof: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model": Payload(proof)}, path)
    return path


def write_truncated(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "model": {"w": torch.zeros(100)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    return path


def refused_without_running(line: str, path: Path, proof: Path) -> bool:
    return (f"{path}: refused: it holds Python objects other than tensors (exec), and loading those could "
            "run code; it was not loaded" in line and not proof.exists() and "weights_only set to False" not in line)


@pytest.mark.parametrize("ray", [False, True])
def test_search_resume_refuses_a_hostile_checkpoint_without_running_it(tmp_path, capsys, ray):
    last = write_hostile(claim_run_dir(tmp_path / "out" / "demo" / "seed0", "search") / "checkpoints" / "last.pt",
                         tmp_path / "proof")
    argv = ["search", str(DEMO_JOB), "--out", str(tmp_path / "out"), "--resume", "--quiet"]
    assert main(argv + ([] if ray else ["--no-ray"])) == 2
    assert refused_without_running(one_error_line(capsys), last, tmp_path / "proof")


def test_search_resume_names_a_truncated_checkpoint(tmp_path, capsys):
    last = write_truncated(claim_run_dir(tmp_path / "out" / "demo" / "seed0", "search") / "checkpoints" / "last.pt")
    argv = ["search", str(DEMO_JOB), "--out", str(tmp_path / "out"), "--resume", "--no-ray", "--quiet"]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"nasseg: error: {last}: not a readable nasseg search checkpoint (truncated")


def test_search_resume_names_a_checkpoint_that_is_not_a_search_state(tmp_path, capsys):
    run = claim_run_dir(tmp_path / "out" / "demo" / "seed0", "search")
    (run / "checkpoints").mkdir()
    torch.save({"epoch": 1, "weights": torch.zeros(2)}, run / "checkpoints" / "last.pt")
    argv = ["search", str(DEMO_JOB), "--out", str(tmp_path / "out"), "--resume", "--no-ray", "--quiet"]
    assert main(argv) == 2
    assert "last.pt: not a nasseg search checkpoint (no model, weight_optimizer" in one_error_line(capsys)


def test_train_resume_evaluate_and_pretrained_refuse_hostile_checkpoints(tmp_path, capsys):
    proof = tmp_path / "proof"
    run = claim_run_dir(tmp_path / "out" / "icnet_resnet50", "train")
    (run / "config.yaml").write_text("name: icnet_resnet50\n")
    last = write_hostile(run / "checkpoints" / "last.pt", proof)
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(tmp_path / "out"), "--resume"]) == 2
    assert refused_without_running(one_error_line(capsys), last, proof)
    assert main(["evaluate", str(run), "--data", "camvid_demo"]) == 2
    assert refused_without_running(one_error_line(capsys), last, proof)
    weights = write_hostile(tmp_path / "backbone.pth", proof)
    assert main(["train", "icnet_resnet50", *TRAIN_FLAGS, "--out", str(tmp_path / "other"),
                 "--pretrained", str(weights)]) == 2
    assert refused_without_running(one_error_line(capsys), weights, proof)


def test_evaluate_names_a_truncated_final_checkpoint(tmp_path, capsys):
    final = write_truncated(tmp_path / "final.pt")
    assert main(["evaluate", str(final), "--data", "camvid_demo"]) == 2
    assert one_error_line(capsys).startswith(f"nasseg: error: {final}: not a readable nasseg checkpoint (truncated")


# --- run files: JSON and CSV ----------------------------------------------------------------------

def test_decode_names_a_truncated_alphas_file(tmp_path, capsys):
    run = tmp_path / "seed0"
    (run / "alphas").mkdir(parents=True)
    text = json.dumps({"alphas_raw": {"normal": [0.1] * 50}, "betas_raw": None})
    (run / "alphas" / "epoch_001.json").write_text(text[: len(text) // 2])
    assert main(["decode", str(run)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"nasseg: error: {run / 'alphas' / 'epoch_001.json'}: not valid JSON")
    assert "expected the architecture weights of epoch 1" in line


def search_run_with_metrics(folder: Path, metrics: str) -> Path:
    run = claim_run_dir(folder / "exp" / "seed0", "search")
    (run / "config.yaml").write_text("name: exp\nepochs: 2\n")
    (run / "metrics.csv").write_text(metrics)
    return run


@pytest.mark.parametrize("metrics, problem", [
    ('epoch,val_miou\n1,"0.5\n', "not a readable CSV table"),
    ("epoch,val_miou,eigenvalue,epoch_seconds\n1,zz,0.1,3\n", "row 1, column 'val_miou': 'zz' is not a number"),
    ("epoch,loss\n1,0.5\n", "no column 'val_miou'"),
    ("", "empty file"),
])
def test_results_names_a_garbled_metrics_file(tmp_path, capsys, metrics, problem):
    run = search_run_with_metrics(tmp_path, metrics)
    assert main(["results", str(tmp_path / "exp")]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"nasseg: error: {run / 'metrics.csv'}: ") and problem in line


def test_results_names_a_garbled_result_json(tmp_path, capsys):
    run = search_run_with_metrics(tmp_path, "epoch,val_miou,eigenvalue,epoch_seconds\n1,0.5,,3\n")
    (run / "result.json").write_text('{"status": "fin')
    assert main(["results", str(tmp_path / "exp")]) == 2
    assert one_error_line(capsys).startswith(f"nasseg: error: {run / 'result.json'}: not valid JSON")


# --- the net: unexpected errors ---------------------------------------------------------------------

def test_an_unexpected_exception_is_one_line_with_exit_3_and_debug_shows_the_traceback(monkeypatch, capsys):
    import nasseg.shell.cli.data as data_cli

    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(data_cli, "cmd_data_check", broken)
    assert main(["data", "check", "camvid_demo"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nasseg: internal error: RuntimeError: boom second line (run with --debug for the "
                   "traceback; please report it)"]
    for argv in (["--debug", "data", "check", "camvid_demo"], ["data", "check", "camvid_demo", "--debug"]):
        assert main(argv) == 3
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and 'raise RuntimeError("boom' in err


def test_bad_input_stays_one_line_in_a_fresh_process(tmp_path):
    """The installed entry point, not just main(): exit 2, one line, no traceback."""
    done = subprocess.run([sys.executable, "-m", "nasseg", "decode", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
