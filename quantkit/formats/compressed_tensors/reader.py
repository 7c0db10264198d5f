"""A compressed-tensors variant read back: every module's scheme resolved from `quantization_config`
the way compressed-tensors' readers resolve it (config.module_scheme), its codes unpacked by
compressed-tensors' own `unpack_from_int32` (packing.unpack), dequantized to fp32 in the source's
key names; and the bytes by role, from the shards' headers."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from ...adapters import adapter_for
from ...checkpoint import Checkpoint, bytes_by_role
from ...errors import VariantCorrupt
from ...scheme import QuantizedWeight, QuantScheme
from .config import module_scheme, parse_config
from .packing import PARTS, unpack


class CTCodes:
    """A compressed-tensors variant's quantized modules as `QuantizedWeight`s (codes as stored), for
    `quantkit.load`, `verify` and converting it into another format (Format.read_codes)."""

    def __init__(self, variant: str | Path):
        self.variant = Path(variant)
        self.ckpt = Checkpoint.open(variant)
        self.config = parse_config(self.ckpt.config.get("quantization_config"), f"{self.variant}/config.json")
        names = set(self.ckpt.names())
        self.modules = sorted({n[: -len(".weight_packed")] for n in names if n.endswith(".weight_packed")})
        self.parts = {m: [p for p in PARTS if f"{m}.{p}" in names] for m in self.modules}
        self.kept = sorted(names - {f"{m}.{p}" for m in self.modules for p in self.parts[m]})
        orphans = [n for n in self.kept if n.rpartition(".")[2] in PARTS or n.endswith(".weight_g_idx")]
        if orphans:
            raise VariantCorrupt(f"{self.variant}: {orphans[0]} has no {orphans[0].rpartition('.')[0]}.weight_packed")

    def group(self, module: str) -> tuple[str, QuantScheme]:
        name, scheme = module_scheme(self.config, module)
        if scheme is None:
            raise VariantCorrupt(f"{self.variant}: {module} is stored packed, but no config group of "
                                 "quantization_config targets it (or `ignore` excludes it)")
        return name, scheme

    def scheme(self, module: str) -> QuantScheme:
        return self.group(module)[1]

    def weight_shape(self, module: str) -> tuple[int, int]:
        out_f, in_f = (int(v) for v in self.ckpt.read(f"{module}.weight_shape").tolist())
        return out_f, in_f

    def stored_bytes(self, module: str) -> int:
        return sum(self.ckpt.info(f"{module}.{p}").nbytes for p in self.parts[module])

    def tensors(self, module: str) -> dict[str, torch.Tensor]:
        t = self.ckpt.read_many([f"{module}.{p}" for p in self.parts[module]])
        return {p: t[f"{module}.{p}"] for p in self.parts[module]}

    def read(self, module: str) -> QuantizedWeight:
        s = self.scheme(module)
        try:
            return unpack(self.tensors(module), s.bits, s.group_size, s.sym)
        except ValueError as e:
            raise VariantCorrupt(f"{self.variant}: {module}: {e}")


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    codes = CTCodes(variant)
    state: dict[str, torch.Tensor] = {}
    for module in codes.modules:
        state[f"{module}.weight"] = codes.read(module).dequantize()
    for n in codes.kept:
        t = codes.ckpt.read(n)
        state[n] = t.float() if t.is_floating_point() else t
    return state


def file_bytes(model_dir: str | Path) -> dict:
    """Bytes of the variant's weights by role (checkpoint.bytes_by_role): a quantized module's
    tensors count as one weight of out x in parameters, read from its `weight_shape`; the same form
    as the other formats' `file_bytes` (Format.file_bytes)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    adapter = adapter_for(config, where=str(model_dir / "config.json"))
    return bytes_by_role(model_dir, adapter.role_of, _packed_part, _quantized_params)


def _packed_part(name: str) -> tuple[str, str] | None:
    module, _, part = name.rpartition(".")
    return (module, part) if part in PARTS else None


def _quantized_params(headers: dict) -> dict[str, int]:
    """out x in of every quantized module, from the values of its `weight_shape` tensor."""
    out = {}
    for path, header in headers.items():
        shapes = [n for n in header if n.endswith(".weight_shape")]
        if shapes:
            with safe_open(path, framework="pt") as f:
                out.update({n[: -len(".weight_shape")]: math.prod(int(v) for v in f.get_tensor(n).tolist())
                            for n in shapes})
    return out
