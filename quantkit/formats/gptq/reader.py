"""A GPTQ variant read back: every module unpacked the way a GPTQ loader reads it (its scheme from
`quantization_config`'s base fields and `dynamic` rules, its numbers from qweight/qzeros/scales/g_idx)
and dequantized to fp32, in the source's key names."""
from __future__ import annotations

from pathlib import Path

import torch

from ...checkpoint import Checkpoint
from ...errors import VariantCorrupt
from .config import module_scheme
from .packing import unpack

PACKED = ("qweight", "qzeros", "scales", "g_idx")


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint.open(variant)
    qcfg = ckpt.config.get("quantization_config")
    if not qcfg or qcfg.get("quant_method") != "gptq":
        raise VariantCorrupt(f"{variant}/config.json: no GPTQ quantization_config; not a GPTQ variant")
    names = set(ckpt.names())
    modules = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
    state: dict[str, torch.Tensor] = {}
    for module in modules:
        scheme = module_scheme(qcfg, module)
        if scheme is None:
            raise VariantCorrupt(f"{variant}: {module} has a qweight but quantization_config skips it (-: rule)")
        parts = {p: f"{module}.{p}" for p in PACKED}
        missing = [n for n in parts.values() if n not in names]
        if missing:
            raise VariantCorrupt(f"{variant}: {missing[0]} is missing")
        tensors = ckpt.read_many(list(parts.values()))
        qw = unpack({p: tensors[n] for p, n in parts.items()}, scheme.bits, scheme.group_size, scheme.sym)
        state[f"{module}.weight"] = qw.dequantize()
        names -= set(parts.values())
    for n in sorted(names):
        t = ckpt.read(n)
        state[n] = t.float() if t.is_floating_point() else t
    return state


class GPTQCodes:
    """A GPTQ variant's quantized modules as `QuantizedWeight`s (codes exactly as stored), for
    converting it into another format without requantizing (Format.read_codes)."""

    def __init__(self, variant: str | Path):
        self.variant = Path(variant)
        self.ckpt = Checkpoint.open(variant)
        self.qcfg = self.ckpt.config.get("quantization_config") or {}
        if self.qcfg.get("quant_method") != "gptq":
            raise VariantCorrupt(f"{variant}/config.json: no GPTQ quantization_config; not a GPTQ variant")
        names = set(self.ckpt.names())
        self.modules = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
        self.kept = sorted(names - {f"{m}.{p}" for m in self.modules for p in PACKED})

    def scheme(self, module: str):
        scheme = module_scheme(self.qcfg, module)
        if scheme is None:
            raise VariantCorrupt(f"{self.variant}: {module} has a qweight but quantization_config skips it")
        return scheme

    def weight_shape(self, module: str) -> tuple[int, int]:
        g_idx, scales = self.ckpt.info(f"{module}.g_idx"), self.ckpt.info(f"{module}.scales")
        return int(scales.shape[1]), int(g_idx.shape[0])

    def stored_bytes(self, module: str) -> int:
        return sum(self.ckpt.info(f"{module}.{p}").nbytes for p in PACKED)

    def read(self, module: str):
        tensors = self.ckpt.read_many([f"{module}.{p}" for p in PACKED])
        s = self.scheme(module)
        return unpack({p: tensors[f"{module}.{p}"] for p in PACKED}, s.bits, s.group_size, s.sym)
