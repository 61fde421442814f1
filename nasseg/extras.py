"""Optional dependencies: packages that only some features need, installed as pip extras.

``pip install nasseg`` brings what searching, training and evaluating need; ONNX export and
TensorBoard logs need packages that a library user may not want (onnxruntime alone is larger than
the rest of nasseg's own dependencies). Every import of such a package goes through
:func:`require`, so a missing one is a single line naming the extra that brings it. The extras are
declared in pyproject.toml (``[project.optional-dependencies]``) under the names of :data:`EXTRAS`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import NassegError

# extra -> the top-level modules it provides (tests/test_packaging.py checks pyproject.toml against it)
EXTRAS = {
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "tensorboard": ("tensorboard",),
}


class MissingExtra(NassegError):
    """A feature was used whose optional packages are not installed."""

    def __init__(self, feature: str, extra: str, reason: str):
        self.feature, self.extra, self.reason = feature, extra, reason
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'nasseg[{extra}]' ({reason})")

    def __reduce__(self):  # pickled when raised in a Ray worker: rebuilt from its parts
        return type(self), (self.feature, self.extra, self.reason)


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (from the pip extra ``extra``) for ``feature``, or raise MissingExtra.

    ``module`` may be a submodule (``torch.utils.tensorboard``) whose import needs the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # the package, or one it imports, is missing or broken
        raise MissingExtra(feature, extra, " ".join(str(exc).split()) or module) from None


def check_extra(extra: str, feature: str) -> None:
    """Raise MissingExtra unless every module of ``extra`` is installed: a cheap check (the modules
    are found, not imported) for a feature to make before any work."""
    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(feature, extra, f"No module named '{module}'")
