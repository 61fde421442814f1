"""The ``ray`` suite: N seeds of a small search as parallel Ray Tune trials against the same searches
one after another in this process (ratio = speed-up)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

from nasseg.search import load_job

from .measure import Bench
from .settings import Row

RAY_SPACE = {
    "name": "bench_tiny",
    "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
    "cell": {"inputs": 2, "nodes": 2, "edges": "dense", "decode": {"k": 2}},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]},
                "head": {"type": "aspp", "rates": [48], "channels": 8}, "classes": 11},
}


def ray_speedup(bench: Bench) -> list[Row]:
    from ..runner.inprocess import run_in_process  # Ray is imported only when this suite runs
    from ..runner.ray_session import ray_session
    from ..runner.tune_search import run_tune_search

    s = bench.s
    cpus = os.cpu_count() or 1
    n = s.ray_trials or max(2, min(cpus, 4))
    # 16 epochs: about 20 s a trial on one core (about a minute before issue 19's speed-ups); a trial's start in a
    # fresh Ray worker (about 3.7 s: Tune, the process, torch and torch._dynamo imports) is what parallel runs pay
    epochs, limit, crop = (1, 8, [32, 32]) if s.quick else (16, None, [96, 128])
    space = RAY_SPACE if s.quick else {**RAY_SPACE, "network": {**RAY_SPACE["network"], "C": 8, "layers": 5,
                                                                "reductions": [1, 3]}}
    label = f"small search x{n} seeds, {epochs} epochs (camvid_demo)"
    bench.say(f"[ray] {label}: parallel Ray Tune trials vs sequential")
    with tempfile.TemporaryDirectory(prefix="nasseg-bench-ray-") as folder:
        folder = Path(folder)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(space))
        job = {"name": "bench_ray", "space": "tiny.yaml", "epochs": epochs, "seeds": list(range(n)),
               "data": {"size": [96, 128], "crop": crop, "batch_size": 2, "limit": limit, "val_batch_size": 8},
               "hessian": {"iters": 5}, "early_stop": {"rule": "none"}, "device": s.device,
               "resources": {"cpus": 1, "gpus": 0}}
        (folder / "job.yaml").write_text(yaml.safe_dump(job))
        config = load_job(folder / "job.yaml")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # what each trial uses (resources.cpus = 1)
        try:
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                results = run_in_process(config, config.seeds, folder / "sequential", progress=False)
            sequential = time.perf_counter() - start
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), ray_session(None, num_cpus=n):
                startup = time.perf_counter() - t0
                start = time.perf_counter()
                outcomes = run_tune_search(config, folder / "parallel", config.seeds)
                parallel = time.perf_counter() - start
            own_sequential = [json.loads((r.run_dir / "result.json").read_text())["seconds"] for r in results]
            own_parallel = [o["seconds"] for o in outcomes if "seconds" in o]
        finally:
            torch.set_num_threads(threads)
    ideal = min(n, cpus)
    mean = lambda values: sum(values) / len(values) if values else float("nan")  # noqa: E731
    note = (f"ratio = speed-up of {n} parallel trials on {cpus} CPUs (ideal {ideal}x); starting Ray took "
            f"{startup:.1f}s more; the searches' own epoch seconds: {mean(own_sequential):.1f}s per seed one "
            f"after another, {mean(own_parallel):.1f}s per trial in parallel")
    return [Row("ray", label, "wall time", "sequential / parallel", sequential, parallel, "s", None, note)]

