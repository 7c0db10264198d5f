"""A GPTQ variant read back: every module unpacked the way a GPTQ loader reads it (its scheme from
`quantization_config`'s base fields and `dynamic` rules, its numbers from qweight/qzeros/scales/g_idx)
and dequantized to fp32, in the source's key names."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ...checkpoint import Checkpoint
from ...errors import VariantCorrupt
from .config import module_scheme
from .packing import unpack

PACKED = ("qweight", "qzeros", "scales", "g_idx")


def scheme_of(variant: str | Path, qcfg: dict, module: str):
    """The scheme quantization_config gives `module` (None: skipped); VariantCorrupt when unreadable."""
    try:
        return module_scheme(qcfg, module)
    except (KeyError, TypeError, ValueError, re.error) as e:
        raise VariantCorrupt(f"{Path(variant) / 'config.json'}: quantization_config cannot be read for {module} "
                             f"({e.__class__.__name__}: {' '.join(str(e).split())})") from None


def read_module(variant: str | Path, qcfg: dict, module: str, tensors: dict[str, torch.Tensor]):
    """`module`'s packed tensors unpacked with the scheme quantization_config gives it; VariantCorrupt
    (one line, naming config.json and the module) when the tensors do not hold that scheme, as when
    config.json was edited to other bits after quantization."""
    scheme = scheme_of(variant, qcfg, module)
    if scheme is None:
        raise VariantCorrupt(f"{variant}: {module} has a qweight but quantization_config skips it (-: rule)")
    try:
        return unpack(tensors, scheme.bits, scheme.group_size, scheme.sym)
    except (ValueError, RuntimeError) as e:
        raise VariantCorrupt(
            f"{Path(variant) / 'config.json'}: quantization_config reads {module} as {scheme.bits}-bit, group size "
            f"{scheme.group_size}, but its stored tensors do not hold that ({' '.join(str(e).split())}); was "
            f"config.json edited? `quantkit verify-files {variant}` compares every file with quantkit.json") from None


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    ckpt = Checkpoint.open(variant)
    qcfg = ckpt.config.get("quantization_config")
    if not qcfg or qcfg.get("quant_method") != "gptq":
        raise VariantCorrupt(f"{variant}/config.json: no GPTQ quantization_config; not a GPTQ variant")
    names = set(ckpt.names())
    modules = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
    state: dict[str, torch.Tensor] = {}
    for module in modules:
        parts = {p: f"{module}.{p}" for p in PACKED}
        missing = [n for n in parts.values() if n not in names]
        if missing:
            raise VariantCorrupt(f"{variant}: {missing[0]} is missing")
        tensors = ckpt.read_many(list(parts.values()))
        qw = read_module(variant, qcfg, module, {p: tensors[n] for p, n in parts.items()})
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
        scheme = scheme_of(self.variant, self.qcfg, module)
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
        return read_module(self.variant, self.qcfg, module, {p: tensors[f"{module}.{p}"] for p in PACKED})
