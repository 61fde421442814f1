import os
import secrets
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "data" / "camvid"

# Tests run on 2 shared cores, two test processes at once (pytest-xdist): one intra-op thread per
# test process avoids OpenMP oversubscription, and so does one per process the tests start (commands
# run as subprocesses read OMP_NUM_THREADS when torch starts).
THREADS = os.environ.get("NASSEG_TEST_THREADS", "1")
torch.set_num_threads(int(THREADS))
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
# Each embedded Ray (searches run as Tune trials in several test processes at once) takes its
# token from RAY_AUTH_TOKEN. Without one, a new local Ray writes ~/.ray/auth_token when it is missing,
# and two pytest-xdist workers starting Ray together on a fresh machine would each write their own:
# one token per test process instead, kept in no file.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))


@pytest.fixture
def repo() -> Path:
    return REPO


TINY_DARTS_SPACE = {
    "name": "tiny_darts",
    "ops": ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"],
    "cell": {"inputs": 2, "nodes": 2, "edges": "dense", "decode": {"k": 2}},
    "network": {"type": "chain", "C": 4, "layers": 3, "reductions": [1],
                "stem": {"type": "three_conv", "channels": [8, 8, 8]},
                "head": {"type": "aspp", "rates": [48], "channels": 8}, "classes": 11},
}


@pytest.fixture(scope="session")
def darts_run(tmp_path_factory) -> Path:
    """A tiny real first-order DARTS search (normal and reduction cells) on the bundled CamVid images,
    the eigenvalue every epoch; the paper rule (window 2) stops it at epoch 4 and returns epoch 2."""
    import json

    import yaml

    from nasseg.search import Search, parse_job

    root = tmp_path_factory.mktemp("darts")
    (root / "tiny_darts.yaml").write_text(yaml.safe_dump(TINY_DARTS_SPACE))
    job = {"name": "tiny_darts", "space": str(root / "tiny_darts.yaml"), "epochs": 8, "device": "cpu",
           "data": {"dataset": "camvid_demo", "size": [32, 48], "crop": [32, 32], "limit": 4, "batch_size": 2,
                    "val_batch_size": 8},
           "hessian": {"iters": 5, "batch_size": 2}, "early_stop": {"rule": "paper", "window": 2, "ratio": 0.75}}
    run = root / "runs" / "tiny_darts" / "seed0"
    Search(parse_job(job), 1, run, progress=False).run_search()
    result = json.loads((run / "result.json").read_text())
    assert (result["status"], result["epochs_run"], result["arch_epoch"]) == ("stopped", 4, 2), result
    return run
