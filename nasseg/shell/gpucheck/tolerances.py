"""How far the checked device may be from the CPU, and why.

Every compared step starts from the same state on both sides (the CPU reference's weights,
architecture parameters, optimiser state and BatchNorm statistics: "lockstep"), so a difference is
that step's own arithmetic. Free-running runs cannot be compared with a useful bound: two float32
kernels of the same math (NCHW against NHWC convolutions on the CPU) gave search losses apart by
4e-7, 2e-4 and 5e-3 relative at steps 2, 3 and 4 (BatchNorm over a handful of values and Adam's
sign-like first updates amplify the last bits), and ICNet training losses 0.8 % apart at step 2.

The bounds below are relative differences, |device - cpu| / |cpu| (an update: the L2 norm of the
difference of the two updates over the L2 norm of the CPU's update), each about 10-20x what that
same-math kernel swap (float32) or CPU autocast (bfloat16 / float16 against float32) measured on
the default sizes of ``nasseg gpucheck``, teacher-forced as here (torch 2.13 CPU, 2026-11). GPU
float32 kernels (TF32 off) differ from the CPU's in the same last bits; cuDNN may take other
algorithms (Winograd, FFT) with errors up to ~1e-5 per convolution, still far inside them.
Decoded architectures and run completion are exact: a comparison with bound 0.
"""

from __future__ import annotations

# float32, a forward pass from the same state: measured <= 4.4e-7 (search), 5.7e-6 (ICNet)
LOSS_FP32 = 1e-4
# validation loss after one lockstep step: the weights differ by the update's difference (below)
VAL_LOSS_FP32 = 1e-3
# float32 updates: measured <= 3.4e-3 (search weights), 2.5e-3 (alphas, Adam). ICNet's gradients
# run through BatchNorm over 2x2 maps of a batch of 4 at 1/32 of the quarter-resolution branch:
# measured 4e-2 to 5.9e-2 between the two CPU float32 kernels
UPDATE_FP32_SEARCH = 5e-2
UPDATE_FP32_TRAIN = 0.3
# bfloat16 autocast (8-bit mantissa) / float16: losses measured <= 4.7e-3 (search, bf16),
# 7.1e-3 (ICNet, fp16 and bf16)
LOSS_REDUCED = 3e-2
# reduced-precision updates are another gradient through those BatchNorms: measured 0.44-0.75
# (search, bf16) and up to 1.6 (ICNet, fp16); a wrong gradient scale (GradScaler's 2^16 not
# unscaled, a missing learning rate) is off by orders of magnitude
UPDATE_REDUCED = 3.0
# Lanczos on Hessian-vector products by double backward: measured <= 5.3e-6
EIGEN_EXACT = 1e-4
# forward differences g(a + e v) - g(a) at e = 1e-4 turn float32 rounding of g into 1e4 times
# larger errors of H v: measured 0.9 % and 1.1 % between the two CPU kernels
EIGEN_FORWARD = 5e-2
# 2 NCCL workers against one process, first step (same weights, SyncBatchNorm): the loss is the
# mean of per-rank means, which differs from the mean over the batch by
# (l1 - l2)(n1 - n2) / (2 (n1 + n2)) when the ranks' counts n of labelled pixels differ
# (CamVid's void pixels); a few percent at most
LOSS_DATA_PARALLEL = 5e-2
EXACT = 0.0
