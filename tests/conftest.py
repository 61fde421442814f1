import os
import secrets
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "data" / "camvid"

# Tests run on 2 shared cores: one intra-op thread per test process avoids OpenMP oversubscription.
torch.set_num_threads(int(os.environ.get("NASSEG_TEST_THREADS", "1")))
# Each embedded Ray (searches run as Tune trials in several test processes at once) takes its
# token from RAY_AUTH_TOKEN. Without one, a new local Ray writes ~/.ray/auth_token when it is missing,
# and two pytest-xdist workers starting Ray together on a fresh machine would each write their own:
# one token per test process instead, kept in no file.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))


@pytest.fixture
def repo() -> Path:
    return REPO
