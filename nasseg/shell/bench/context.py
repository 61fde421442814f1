"""What the suites of one bench run share: settings, device, memory probe, progress output."""

from __future__ import annotations

import sys
from typing import Sequence

import torch
from tqdm import tqdm

from .measure import MemoryProbe, release_memory, time_alternating
from .nets import NetConfig, Variant
from .settings import Settings


class Bench:
    def __init__(self, settings: Settings):
        self.s = settings
        self.device = torch.device(settings.device)
        self.memory = MemoryProbe(settings.memory, settings.device, settings.threads, settings.seed)

    def say(self, text: str) -> None:
        if self.s.progress:
            tqdm.write(text, file=sys.stderr)

    def time(self, net: NetConfig, kinds: Sequence[str], desc: str) -> dict[str, dict[str, float]]:
        """Median seconds per step part of each variant of ``net``, all starting from the weights of
        one nasseg supernet, alternated in this process (:func:`time_alternating`); freed after."""
        first = Variant(net, "ours", self.device, self.s.seed)
        variants = {kind: first if kind == "ours" else Variant(net, kind, self.device, self.s.seed, source=first.model)
                    for kind in kinds}
        with tqdm(total=self.s.warmup + self.s.repeats, disable=not self.s.progress, leave=False, desc=desc,
                  unit="round") as bar:
            timed = time_alternating(variants, self.s.warmup, self.s.repeats, bar)
        for variant in (first, *variants.values()):
            variant.release()
        del first, variants
        release_memory()
        return timed
