"""timm's RandAugment config string, parsed without torch (the config checks it before anything starts)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

LEVEL_DENOM = 10.0  # timm's magnitude scale: M10 is the full argument range


@dataclass(frozen=True)
class RandAugmentSpec:
    """timm's RandAugment config string (``rand-m9-n2-mstd0.5-inc1-mmax10-p0.5``), parsed."""

    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0  # > 100 means uniform in [0, magnitude], as in timm
    magnitude_max: float = LEVEL_DENOM
    increasing: bool = False
    prob: float = 0.5

    @classmethod
    def parse(cls, text: str) -> "RandAugmentSpec":
        parts = text.split("-")
        if parts[0] != "rand":
            raise ValueError(f"{text!r} is not a RandAugment string; it must start with 'rand', e.g. rand-m9-mstd0.5")
        values: dict = {}
        keys = {"m": ("magnitude", float), "n": ("num_ops", int), "mstd": ("magnitude_std", float),
                "mmax": ("magnitude_max", float), "inc": ("increasing", lambda v: bool(int(v))), "p": ("prob", float)}
        for part in parts[1:]:
            match = re.fullmatch(r"([a-z]+)(\d.*)", part)
            if not match or match.group(1) not in keys:
                raise ValueError(f"{text!r}: unknown section {part!r}; sections are m, n, mstd, mmax, inc, p")
            name, kind = keys[match.group(1)]
            try:
                values[name] = kind(match.group(2))
            except ValueError:
                raise ValueError(f"{text!r}: {part!r} does not hold a number") from None
        spec = cls(**values)
        if spec.num_ops < 0 or not 0 <= spec.prob <= 1 or spec.magnitude < 0 or not math.isfinite(spec.magnitude_std):
            raise ValueError(f"{text!r}: needs n >= 0, 0 <= p <= 1, m >= 0 and a finite mstd")
        return spec
