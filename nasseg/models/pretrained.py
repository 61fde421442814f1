"""Load a user's local checkpoint (e.g. ImageNet backbone weights) into a module.

Nothing is downloaded: the file is read with ``weights_only=True`` (tensors only, no pickled
code). Keys the module has but the file lacks, and the reverse, are returned and logged rather
than fatal, so a classification checkpoint (with ``fc.*``) loads into a segmentation backbone;
a shape mismatch is an error naming the key.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..errors import NassegError
from ..io import load_tensors

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model")  # common containers around a state dict
_DATA_PARALLEL_PREFIX = "module."


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_pretrained` did: keys left at their initial values, keys ignored."""

    missing: list[str]
    unexpected: list[str]


def _state_dict_from(checkpoint: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(checkpoint, Mapping):
        checkpoint = next((checkpoint[k] for k in _WRAPPER_KEYS if isinstance(checkpoint.get(k), Mapping)), checkpoint)
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise NassegError(f"{path}: not a state dict (a mapping from parameter names to tensors)")
    state = dict(checkpoint)
    if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return state


def load_pretrained(module: nn.Module, path: str | os.PathLike) -> LoadReport:
    """Copy the matching tensors of the checkpoint at ``path`` into ``module``.

    Raises :class:`NassegError` when the file is missing or unreadable, or when a key present in
    both has a different shape.
    """
    path = Path(path)
    state = _state_dict_from(load_tensors(path, "pretrained checkpoint"), path)
    own = module.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise NassegError(f"{path}: {key!r} has shape {tuple(tensor.shape)} in the checkpoint but "
                              f"{tuple(own[key].shape)} in the model")
    result = module.load_state_dict(state, strict=False)
    for keys, what in ((result.missing_keys, "keys missing from the checkpoint (left as initialised)"),
                       (result.unexpected_keys, "checkpoint keys not in the model (ignored)")):
        if keys:
            log.warning("%s: %d %s: %s", path, len(keys), what, ", ".join(keys))
    return LoadReport(list(result.missing_keys), list(result.unexpected_keys))
