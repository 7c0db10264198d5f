"""A GPTQ variant as vLLM sees it: the checkpoint's modules grouped into vLLM's modules (fused q/k/v,
gate/up, one FusedMoE per layer and modality: the adapter's `vllm_unit`), and how vLLM resolves a
module's scheme from `quantization_config` (base fields + the first `dynamic` key that `re.match`es
vLLM's own module name; vLLM gptq_utils.py get_dynamic_override / override_config, read not copied).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ...adapters import adapter_for
from ...errors import CheckpointError
from .integrity import PackedModule, VariantFiles
from .onnx_check import stream_values

MARLIN_TYPES = {(4, True), (8, True)}
MARLIN_GROUPS = (-1, 32, 64, 128)


# -- the variant as vLLM sees it ------------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """A vLLM module that loads one or more checkpoint modules."""
    prefix: str  # vLLM module name (what `dynamic` is matched against)
    kind: str  # linear | moe | router | vision | other
    layer: int | None = None
    modality: str | None = None


@dataclass
class Member:
    module: str  # checkpoint module name
    shard: str  # q/k/v/gate/up/down/"" within the unit
    packed: PackedModule | None  # None: stored as float


class VllmView:
    """The checkpoint modules of a variant grouped the way vLLM's ERNIE-4.5 model code builds them."""

    def __init__(self, v: VariantFiles):
        self.v = v
        self.adapter = adapter_for(v.config, where=str(v.path / "config.json"))
        self.units: dict[Unit, list[Member]] = defaultdict(list)
        self.unrecognised: list[str] = []
        packed = v.packed_modules()
        modules: dict[str, PackedModule | None] = dict(packed)
        for name in v.plain_names():
            module, _, leaf = name.rpartition(".")
            if leaf in ("weight", "weight_1") and module not in modules:
                modules[module] = None
        for module, pm in sorted(modules.items()):
            try:
                role = self.adapter.role_of(f"{module}.weight")
            except CheckpointError:
                self.unrecognised.append(module)
                continue
            unit, shard = self._unit(module, role)
            if unit is not None:
                self.units[unit].append(Member(module, shard, pm))

    def _unit(self, module: str, role) -> tuple[Unit | None, str]:
        prefix, kind, shard = self.adapter.vllm_unit(module, role)
        if prefix is None:
            return None, ""
        return Unit(prefix, kind, role.layer if kind != "vision" else None,
                    role.modality if kind in ("moe", "router") else None), shard

    def role_of(self, name: str):
        """The role of a tensor name (None where the family's adapter does not know it)."""
        try:
            return self.adapter.role_of(name)
        except CheckpointError:
            return None

    def of_kind(self, kind: str) -> dict[Unit, list[Member]]:
        return {u: ms for u, ms in self.units.items() if u.kind == kind}

    def moe_sizes(self, unit: Unit) -> tuple[int, int]:
        """(hidden, intermediate) of a FusedMoE unit (tensor parallel size 1)."""
        s = self.adapter.shape
        return s.hidden_size, s.expert_intermediate[unit.modality or "text"]


def unit_label(unit: Unit) -> str:
    return f"{unit.prefix}" if unit.kind != "moe" else f"{unit.prefix} (layer {unit.layer} {unit.modality} experts)"


@dataclass(frozen=True)
class Resolved:
    skip: bool
    bits: int = 0
    group_size: int = 0
    sym: bool = True
    desc_act: bool = False
    rule: str | None = None  # the dynamic key that matched


def resolve_vllm(qcfg: dict, prefix: str) -> Resolved:
    """get_dynamic_override + override_config (gptq_utils.py), read not copied: the base fields, then
    the first `dynamic` key whose regex `re.match`es the vLLM module name."""
    fields = dict(bits=qcfg.get("bits"), group_size=qcfg.get("group_size"), sym=qcfg.get("sym"),
                  desc_act=qcfg.get("desc_act"))
    for key, override in (qcfg.get("dynamic") or {}).items():
        neg = key.startswith("-:")
        rx = key[2:] if key.startswith(("-:", "+:")) else key
        if re.match(rx, prefix):
            if neg:
                return Resolved(True, rule=key)
            for k in ("bits", "group_size"):
                if isinstance(override.get(k), int) and not isinstance(override.get(k), bool):
                    fields[k] = override[k]
            for k in ("sym", "desc_act"):
                if isinstance(override.get(k), bool):
                    fields[k] = override[k]
            return Resolved(False, fields["bits"], fields["group_size"], fields["sym"], fields["desc_act"], key)
    return Resolved(False, fields["bits"], fields["group_size"], fields["sym"], fields["desc_act"])


def checkpoint_name_hint(qcfg: dict, members: list[Member]) -> str:
    """Name the dynamic key that was evidently written for the checkpoint's module names."""
    for m in members:
        for key in qcfg.get("dynamic") or {}:
            rx = key[2:] if key.startswith(("-:", "+:")) else key
            if re.match(rx, m.module):
                return f"; {key!r} matches the checkpoint name {m.module}, not vLLM's"
    return ""


def n_groups(dim: int, g: int, ceil: bool = False) -> int:
    if g == -1:
        return 1
    return math.ceil(dim / g) if ceil else dim // g


def zeros_symmetric(v: VariantFiles, pm: PackedModule) -> bool:
    z = stream_values(v.read_np(f"{pm.module}.qzeros"), pm.bits)[:, : pm.out_features]
    return bool(np.all(((z.astype(np.int64) + 1) % (1 << pm.bits)) == (1 << (pm.bits - 1))))


def act_order(v: VariantFiles, pm: PackedModule) -> bool:
    g_idx = v.read_np(f"{pm.module}.g_idx").astype(np.int64)
    g = pm.group_size or pm.in_features
    return not np.array_equal(g_idx, np.arange(pm.in_features) // g)
