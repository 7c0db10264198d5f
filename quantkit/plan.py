"""Checkpoint + adapter + profile -> a per-tensor plan: which scheme, predicted bytes, fallbacks.

The plan is where runtime rules refuse an unloadable variant before any work is done: one bit width
per fused group (vLLM reads an expert's gate/up/down, or q/k/v, through one kernel), nothing but
linear weights quantized, and group sizes that divide the layer (else a recorded fallback).
A `format: gguf` profile plans one llama.cpp file instead: every tensor gets its GGML type
(quantkit.gguf.types: a scheme no type holds exactly is refused, never approximated), the experts of
one layer and projection share one type (they are one stacked tensor), and embeddings / output head
may take a quantized type.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

from .adapters import Adapter
from .checkpoint import Checkpoint, TensorInfo
from .errors import QuantkitError
from .profiles import Profile
from .quantize.gptq_format import check_packable, packed_nbytes
from .quantize.scheme import QuantScheme
from .roles import Role

# Smallest group the fallback will pick before going per-channel: GPTQ kernels (Marlin, exllama)
# take 32, 64 and 128.
_MIN_GROUP = 32


@dataclass
class TensorPlan:
    name: str
    role: Role
    shape: tuple[int, ...]
    dtype: str
    source_bytes: int
    scheme: QuantScheme | None  # None: kept bit-identical
    fallback: str | None = None
    fused_group: str | None = None
    gguf_type: str | None = None  # GGML type when the plan is for a GGUF file (F32/BF16/... when kept)

    @property
    def quantized(self) -> bool:
        return self.scheme is not None

    @property
    def module(self) -> str:
        """The module name a loader sees (`...experts.3.down_proj` for `...down_proj.weight`)."""
        return self.name.rsplit(".", 1)[0]

    @property
    def predicted_bytes(self) -> int:
        if self.gguf_type is not None:
            from .gguf.types import tensor_nbytes
            return tensor_nbytes(self.shape, self.gguf_type)
        if self.scheme is None:
            return self.source_bytes
        out_f, in_f = self.shape
        return packed_nbytes(out_f, in_f, self.scheme.bits, self.scheme.effective_group_size(in_f))


@dataclass
class Plan:
    source: str
    revision: str | None
    family: str
    profile: Profile
    entries: list[TensorPlan]
    notes: list[str] = field(default_factory=list)

    @property
    def predicted_bytes(self) -> int:
        return sum(e.predicted_bytes for e in self.entries)

    def quantized(self) -> list[TensorPlan]:
        return [e for e in self.entries if e.quantized]

    def fallbacks(self) -> list[TensorPlan]:
        return [e for e in self.entries if e.fallback]

    def by_role(self) -> dict[str, dict]:
        """Per role label: tensors, parameters, source bytes, planned bytes, schemes used."""
        rows: dict[str, dict] = defaultdict(lambda: {"tensors": 0, "params": 0, "source_bytes": 0,
                                                     "planned_bytes": 0, "schemes": set()})
        for e in self.entries:
            r = rows[e.role.label]
            r["tensors"] += 1
            r["params"] += math.prod(e.shape)
            r["source_bytes"] += e.source_bytes
            r["planned_bytes"] += e.predicted_bytes
            r["schemes"].add(_scheme_label(e.scheme) + (f" ({e.gguf_type})" if e.gguf_type else ""))
        return {k: {**v, "schemes": sorted(v["schemes"])} for k, v in sorted(rows.items())}


def _scheme_label(s: QuantScheme | None) -> str:
    if s is None:
        return "keep"
    g = "ch" if s.group_size == -1 else f"g{s.group_size}"
    return f"{s.method}-w{s.bits}{g}{'' if s.sym else '-asym'}{'-actorder' if s.desc_act else ''}"


def _fit_group(scheme: QuantScheme, in_features: int) -> tuple[QuantScheme, str | None]:
    """Keep the group size if it divides the input width, else halve it down to 32, else per-channel."""
    g = scheme.group_size
    if g == -1 or in_features % g == 0:
        return scheme, None
    cand = g // 2
    while cand >= _MIN_GROUP and in_features % cand:
        cand //= 2
    new = cand if cand >= _MIN_GROUP else -1
    what = f"group {new}" if new != -1 else "per-channel"
    return replace(scheme, group_size=new), f"group_size {g} does not divide in_features {in_features}: {what}"


def _check_packable(info: TensorInfo, scheme: QuantScheme) -> None:
    try:
        check_packable(info.shape[0], info.shape[1], scheme.bits, scheme.group_size)
    except ValueError as e:
        raise QuantkitError(f"tensor {info.name}: {e}; keep it in the profile or use other bits")


def build_plan(ckpt: Checkpoint, adapter: Adapter, profile: Profile, *, force: bool = False) -> Plan:
    if profile.family != adapter.family:
        raise QuantkitError(f"profile {profile.name} ({profile.source}) is for {profile.family}, "
                            f"but {ckpt.source} is {adapter.family}")
    gguf = profile.format == "gguf"
    entries, notes = [], []
    for info in ckpt.infos():
        role = adapter.role_of(info.name)
        scheme = profile.scheme_for(info.name, role)
        fallback = None
        if scheme is not None:
            is_linear_weight = role.is_linear and info.name.endswith(".weight") and len(info.shape) == 2
            if gguf and role.kind in ("embedding", "lm_head") and len(info.shape) == 2:
                is_linear_weight = True  # llama.cpp reads quantized token embeddings and output heads
            if not is_linear_weight:
                if role.is_linear:  # a bias of a quantized linear: stays float, as loaders expect
                    scheme = None
                else:
                    raise QuantkitError(f"profile {profile.name}: rule quantizes {info.name} ({role.kind}); only "
                                        "linear weights of experts, attention and MLPs can be quantized "
                                        f"(a quantized {role.kind} breaks serving engines)")
        if gguf:
            from .gguf.types import gguf_tensor_type
            entries.append(TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, scheme,
                                      gguf_type=gguf_tensor_type(info, role, scheme)))
            continue
        if scheme is not None:
            scheme, fallback = _fit_group(scheme, info.shape[1])
            _check_packable(info, scheme)
        entries.append(TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, scheme, fallback,
                                  adapter.fused_group(info.name, role) if scheme is not None else None))
    if gguf:
        from .gguf.types import check_stacked_experts
        check_stacked_experts(entries)
    else:
        _check_fused_groups(entries, force, notes)
    _check_coverage(entries, adapter, notes)
    for e in entries:
        if e.fallback:
            notes.append(f"{e.name}: {e.fallback}")
    return Plan(ckpt.source, ckpt.revision, adapter.family, profile, entries, notes)


def _check_fused_groups(entries: list[TensorPlan], force: bool, notes: list[str]) -> None:
    groups: dict[str, set] = defaultdict(set)
    for e in entries:
        if e.fused_group:
            groups[e.fused_group].add((e.scheme.bits, e.scheme.sym, e.scheme.desc_act))
    for g, kinds in sorted(groups.items()):
        if len(kinds) > 1:
            msg = (f"fused group {g} mixes schemes {sorted(kinds)}; vLLM runs it through one kernel "
                   "and cannot load mixed bit widths")
            if not force:
                raise QuantkitError(msg + " (pass --force to write it anyway)")
            notes.append("forced: " + msg)


def _check_coverage(entries: list[TensorPlan], adapter: Adapter, notes: list[str]) -> None:
    """Every routed expert of every MoE layer must be planned one way or the other, and the plan says
    plainly when the profile keeps experts at source precision."""
    seen = {(e.role.layer, e.role.modality, e.role.expert) for e in entries if e.role.kind == "routed_expert"}
    for layer in adapter.shape.moe_layers:
        for modality, n in adapter.shape.experts.items():
            missing = [k for k in range(n) if (layer, modality, k) not in seen]
            if missing:
                raise QuantkitError(f"checkpoint: layer {layer} has no tensors for {modality} experts {missing[:5]}; "
                                    "the checkpoint is incomplete or the config does not match it")
    kept = [e.name for e in entries if e.role.kind == "routed_expert" and not e.quantized]
    if kept:
        notes.append(f"profile keeps {len(kept)} routed-expert tensors at source precision (e.g. {kept[0]})")
