import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CAMVID = REPO.parent / "shared" / "data" / "camvid"

# Tests run on 2 shared cores: one intra-op thread per test process avoids OpenMP oversubscription.
torch.set_num_threads(int(os.environ.get("NASSEG_TEST_THREADS", "1")))


@pytest.fixture
def repo() -> Path:
    return REPO
