"""Checkpoint + adapter + profile -> a per-tensor plan: which scheme, predicted bytes, fallbacks.

The plan is where rules refuse an unloadable variant before any work is done: nothing but linear
weights quantized (routers, norms, vision tower stay float), every routed expert planned. The
profile's output format (quantkit.format) types and sizes each tensor and adds its own refusals:
one bit width per fused group for GPTQ's runtimes, one GGML type per stacked expert tensor for GGUF,
and so on. The plan never names a format.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from .adapters import Adapter
from .checkpoint import Checkpoint
from .errors import CheckpointError, PlanRefused, ProfileError
from .format import Format, get_format
from .profiles import Profile
from .roles import Role
from .scheme import QuantScheme, scheme_label


@dataclass
class TensorPlan:
    name: str
    role: Role
    shape: tuple[int, ...]
    dtype: str
    source_bytes: int
    scheme: QuantScheme | None  # None: kept bit-identical
    planned_bytes: int  # bytes as the format stores it
    fallback: str | None = None
    fused_group: str | None = None
    storage: str | None = None  # the format's own type for the tensor, where it has one (a GGML type)

    @property
    def quantized(self) -> bool:
        return self.scheme is not None

    @property
    def module(self) -> str:
        """The module name a loader sees (`...experts.3.down_proj` for `...down_proj.weight`)."""
        return self.name.rsplit(".", 1)[0]

    @property
    def predicted_bytes(self) -> int:
        return self.planned_bytes


@dataclass
class Plan:
    source: str
    revision: str | None
    family: str
    profile: Profile
    entries: list[TensorPlan]
    notes: list[str] = field(default_factory=list)
    format: Format = field(default=None)  # the profile's format (set by build_plan)
    allocation: object = None  # a quantkit.allocate.Allocation when --target-size / --vram chose the bits

    def __post_init__(self):
        if self.format is None:
            self.format = get_format(self.profile.format)

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
            r["schemes"].add(scheme_label(e.scheme) + (f" ({e.storage})" if e.storage else ""))
        return {k: {**v, "schemes": sorted(v["schemes"])} for k, v in sorted(rows.items())}


def build_plan(ckpt: Checkpoint, adapter: Adapter, profile: Profile, *, force: bool = False) -> Plan:
    if profile.family != adapter.family:
        raise ProfileError(f"profile {profile.name} ({profile.source}) is for {profile.family}, "
                           f"but {ckpt.source} is {adapter.family}")
    fmt = get_format(profile.format, option=f"profile {profile.name}: format")
    entries, notes = [], []
    for info in ckpt.infos():
        role = adapter.role_of(info.name)
        scheme = profile.scheme_for(info.name, role)
        if scheme is not None and not fmt.quantizable(role, info.shape, info.name):
            if role.is_linear:  # a bias of a quantized linear: stays float, as loaders expect
                scheme = None
            else:
                raise PlanRefused(f"profile {profile.name}: rule quantizes {info.name} ({role.kind}); only "
                                  "linear weights of experts, attention and MLPs can be quantized "
                                  f"(a quantized {role.kind} breaks serving engines)")
        entries.append(fmt.plan_tensor(info, role, scheme, adapter))
    fmt.check_plan(entries, force, notes)
    _check_coverage(entries, adapter, notes)
    for e in entries:
        if e.fallback:
            notes.append(f"{e.name}: {e.fallback}")
    return Plan(ckpt.source, ckpt.revision, adapter.family, profile, entries, notes, fmt)


def check_fused_groups(entries: list[TensorPlan], force: bool, notes: list[str]) -> None:
    """One scheme per fused group (an expert layer's gate/up/down of one modality, q/k/v, gate/up):
    the runtimes read each group through one kernel."""
    groups: dict[str, set] = defaultdict(set)
    for e in entries:
        if e.fused_group:
            groups[e.fused_group].add((e.scheme.bits, e.scheme.sym, e.scheme.desc_act))
    for g, kinds in sorted(groups.items()):
        if len(kinds) > 1:
            msg = (f"fused group {g} mixes schemes {sorted(kinds)}; vLLM runs it through one kernel "
                   "and cannot load mixed bit widths")
            if not force:
                raise PlanRefused(msg + " (pass --force to write it anyway)")
            notes.append("forced: " + msg)


def _check_coverage(entries: list[TensorPlan], adapter: Adapter, notes: list[str]) -> None:
    """Every routed expert of every MoE layer must be planned one way or the other, and the plan says
    plainly when the profile keeps experts at source precision."""
    seen = {(e.role.layer, e.role.modality, e.role.expert) for e in entries if e.role.kind == "routed_expert"}
    for layer in adapter.shape.moe_layers:
        for modality, n in adapter.shape.experts.items():
            missing = [k for k in range(n) if (layer, modality, k) not in seen]
            if missing:
                raise CheckpointError(f"checkpoint: layer {layer} has no tensors for {modality} experts {missing[:5]}; "
                                    "the checkpoint is incomplete or the config does not match it")
    kept = [e.name for e in entries if e.role.kind == "routed_expert" and not e.quantized]
    if kept:
        notes.append(f"profile keeps {len(kept)} routed-expert tensors at source precision (e.g. {kept[0]})")
