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


def assert_same_pass(net, first, second, start: dict, train: bool, logits_tol=(1e-10, 1e-12), grad_tol=(1e-9, 1e-11)):
    """Two runs of a training pass of ``net``, each (logits, gradients of net.parameters(), state dict after),
    agree: the logits and every gradient (each alpha / beta among them) to (rtol, atol), the running statistics
    and batch counts to 1e-10; in training mode the statistics moved from ``start``."""
    (logits_a, grads_a, state_a), (logits_b, grads_b, state_b) = first, second
    torch.testing.assert_close(logits_b, logits_a, rtol=logits_tol[0], atol=logits_tol[1])
    arch = {id(p) for p in net.arch_parameters()}
    checked_arch = 0
    for p, a, b in zip(net.parameters(), grads_a, grads_b):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=grad_tol[0], atol=grad_tol[1])
            checked_arch += id(p) in arch
    assert checked_arch == len(arch)
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-10, atol=1e-12, msg=k)
    if train:
        assert any(not torch.equal(state_a[k], start[k]) for k in start if k.endswith("running_mean"))


def ready_for_a_pass(net, channels_last: bool, size: int, classes: int = 4):
    """(net, x, y): ``net`` with normal-drawn alphas / betas (every op weighs), in channels-last if asked; a float64
    batch of 2 at ``size`` x ``size`` in the same layout, with segmentation labels."""
    from nasseg.layers import to_channels_last
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    x, y = torch.randn(2, 3, size, size, dtype=torch.float64), torch.randint(0, classes, (2, size, size))
    if channels_last:
        net, x = to_channels_last(net), x.contiguous(memory_format=torch.channels_last)
    return net, x, y
