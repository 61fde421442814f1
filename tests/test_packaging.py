"""nasseg as an installed library: the optional extras and their one-line errors, and the wheel,
installed into a fresh virtual environment outside the clone, running the commands from there."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest

from nasseg.extras import EXTRAS
from nasseg.shell.cli.main import main
from nasseg.train.trainer import Trainer
from test_evaluate import make_checkpoint
from test_train import tiny_config

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
TESTED_TORCH = "2.13.0"  # what tools/setup.sh installs and the README names
DEMO_SPLITS = {"train": 48, "trainannot": 48, "val": 16, "valannot": 16}  # the bundled CamVid subset


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalized(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def absolute_imports() -> list[tuple[str, str]]:
    """(module, file:line) of every absolute import statement in nasseg/."""
    found = []
    for path in sorted((REPO / "nasseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            found += [(name, f"{path.relative_to(REPO)}:{node.lineno}") for name in names]
    return found


def test_every_third_party_import_is_a_declared_dependency():
    """A package the code imports but pyproject.toml does not declare works in the dev venv and fails
    for a user who installs the wheel."""
    project = PYPROJECT["project"]
    declared = requirement_names(project["dependencies"])
    providers = importlib.metadata.packages_distributions()
    first_import: dict[str, str] = {}
    for name, where in absolute_imports():
        first_import.setdefault(name.split(".")[0], where)
    undeclared = [f"{where}: {module} ({', '.join(providers.get(module, ['not installed']))})"
                  for module, where in first_import.items()
                  if module not in sys.stdlib_module_names and module != "nasseg"
                  and not declared & {normalized(d) for d in providers.get(module, [module])}]
    assert undeclared == []


def test_extras_in_pyproject_are_the_ones_the_code_asks_for():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert requirement_names(optional[extra]) - {"torch"} == set(modules), extra
    core = requirement_names(PYPROJECT["project"]["dependencies"])
    assert core.isdisjoint(m for modules in EXTRAS.values() for m in modules)
    assert re.fullmatch(r"torch>=[\d.]+", next(r for r in PYPROJECT["project"]["dependencies"]
                                              if r.startswith("torch")))
    assert requirement_names(optional["dev"]) == {"nasseg"}
    assert set(re.findall(r"\w+", optional["dev"][0].split("[", 1)[1])) == {"test", *EXTRAS}


def test_optional_packages_are_imported_only_through_the_extras_helper():
    """A plain ``import onnx`` anywhere would fail with a traceback instead of naming the extra."""
    optional = [m for modules in EXTRAS.values() for m in modules] + ["torch.utils.tensorboard"]
    found = [f"{where} {name}" for name, where in absolute_imports()
             if any(name == m or name.startswith(f"{m}.") for m in optional)]
    assert found == []


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_export_without_the_extra_says_which_to_install(tmp_path, capsys, monkeypatch, missing):
    checkpoint = make_checkpoint(tmp_path / "final.pt", crop=(32, 32))
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: its import fails
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err == (f"nasseg: error: nasseg export needs the 'export' extra: "
                                       f"pip install 'nasseg[export]' (No module named '{missing}')\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.pt"]


def test_training_without_tensorboard_warns_once_and_keeps_the_csv_logs(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    trainer = Trainer(tiny_config(iters=2, checkpoint_every=2), tmp_path / "run", progress=False)
    result = trainer.run()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["TensorBoard logging needs the 'tensorboard' extra: pip install 'nasseg[tensorboard]' "
                        "(import of torch.utils.tensorboard halted; None in sys.modules); training goes on "
                        "without TensorBoard logs (log.csv and eval.csv hold the numbers)"]
    run = trainer.run_dir
    assert result is not None and not (run / "tb").exists()
    assert len((run / "log.csv").read_text().splitlines()) == 3  # header + 2 iterations
    assert (run / "eval.csv").is_file() and (run / "final.pt").is_file()


# ---- the wheel, installed outside the clone ----

def build_wheel(tmp_path: Path) -> Path:
    """The wheel of the working tree, built from a copy in ``tmp_path``: setuptools writes build/ and
    *.egg-info next to the sources, which must not happen in the clone (other tests read it)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "nasseg", source / "nasseg", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    # no build isolation: the project's setuptools builds it, nothing is fetched
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(dist)], check=True, cwd=tmp_path, timeout=300,
                   capture_output=True, text=True)
    (wheel,) = dist.glob("nasseg-*.whl")
    return wheel


def package_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def venv_site_packages(venv: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a user who activated ``venv``: nothing points at the clone."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV") and not k.startswith("PYTEST")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def nasseg(venv: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(venv / "bin" / "nasseg"), *args], cwd=cwd, env=clean_env(venv),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"nasseg {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done


PROBE = """import json, nasseg, nasseg.space as s, nasseg.arch as a, nasseg.data.datasets as d, nasseg.shell.demo as m
print(json.dumps({"module": nasseg.__file__, "demo_data": str(d.DEMO_ROOT), "demo_job": str(m.DEMO_JOB),
                  "spaces": s.builtin_spaces(), "archs": a.builtin_archs(),
                  "darts_v2_nodes": len(a.load("darts_v2").cells["normal"].nodes)}))"""


def check_installed(venv: Path, cwd: Path, bench: list[str]) -> None:
    """The wheel's code, its data files and its commands, used from ``cwd`` outside the clone."""
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", PROBE], cwd=cwd, env=clean_env(venv),
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    site = venv_site_packages(venv)
    assert Path(found["module"]) == site / "nasseg" / "__init__.py"
    assert package_files(site / "nasseg") == package_files(REPO / "nasseg")  # code and package data
    demo = Path(found["demo_data"])
    assert demo.is_relative_to(site) and Path(found["demo_job"]).is_file()
    assert {split: len(list((demo / split).iterdir())) for split in DEMO_SPLITS} == DEMO_SPLITS
    assert found["spaces"] == sorted(p.stem for p in (REPO / "nasseg" / "search_spaces").glob("*.yaml"))
    assert found["archs"] == sorted(p.stem for p in (REPO / "nasseg" / "archs").glob("*.yaml"))
    assert found["darts_v2_nodes"] == 4  # a packaged ArchSpec, parsed

    info = json.loads(nasseg(venv, cwd, "info", "darts_cifar", "--json").stdout)
    assert info["params"] == 1930618 and Path(info["file"]).is_relative_to(site)
    assert "ratio = value / baseline" in nasseg(venv, cwd, "bench", "--quick", "--quiet", *bench, timeout=900).stdout


def test_wheel_installs_into_a_fresh_venv_and_runs_outside_the_clone(tmp_path):
    """The wheel's contents: installed with --no-deps into a new venv that sees the project venv's
    dependencies through a .pth file (its site-packages only: that directory's own .pth files, among
    them the editable install's path hook, are not run), and used from a folder outside the clone."""
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (venv_site_packages(venv) / "nasseg-dependencies.pth").write_text(f"{sysconfig.get_path('purelib')}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--no-deps", "--quiet", str(wheel)], check=True, timeout=300, capture_output=True)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    # one fast suite of the bench (the whole --quick run is the slow test's)
    check_installed(venv, cwd, ["--suite", "order", "--repeats", "1", "--warmup", "0", "--memory", "off"])


@pytest.mark.slow
def test_wheel_with_its_dependencies_in_a_clean_venv(tmp_path):
    """What a user does: a new venv, the tested torch (its CPU wheel; a plain install would take a
    CUDA build), then the wheel with its dependencies from the index. Without the extras, `nasseg
    export` names the one to install."""
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    for requirement in (f"torch=={TESTED_TORCH}", str(wheel)):
        done = subprocess.run([python, "-m", "pip", "install", "--quiet", requirement], cwd=tmp_path,
                              capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    print(f"clean install: {time.perf_counter() - started:.0f} s")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    check_installed(venv, cwd, [])
    checkpoint = make_checkpoint(cwd / "final.pt", crop=(32, 32))
    done = subprocess.run([str(venv / "bin" / "nasseg"), "export", str(checkpoint), "-o", "m.onnx"], cwd=cwd,
                          env=clean_env(venv), capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (2, "nasseg: error: nasseg export needs the 'export' extra: "
                                                 "pip install 'nasseg[export]' (No module named 'onnx')\n")
