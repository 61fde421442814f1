"""``nasseg gpucheck``: run nasseg's CUDA code paths once and check them against the CPU.

Each check computes the same thing twice, on the CPU (the reference) and on the checked device,
from the same seed: the steps of a DARTS search in float32 and in bfloat16 autocast
(``supernet.amp``), the dominant Hessian eigenvalue of a fixed batch, the decoded architecture of
a mini search, retraining steps in float32 and with AMP, then measures ``nasseg info --latency``,
runs ``nasseg bench`` on the device and, with two GPUs or more, a 2-worker NCCL retraining. It
writes a table of the agreement (pass/fail per comparison, tolerances in :mod:`.tolerances`),
times and peak GPU memory to ``OUT/gpucheck.md``, ``.csv`` and ``.json``.

``--device cpu`` runs the device side on the CPU too: every comparison is then exact (a test).
"""

from .run import run_gpucheck
from .settings import CHECKS, GpuCheckSettings

__all__ = ["CHECKS", "GpuCheckSettings", "run_gpucheck"]
