"""vLLM's contract for a compressed-tensors variant (vLLM >= 0.34), one rule per function, each naming
the vLLM file it was read from (facts checked against the vLLM 0.34 wheel: shared/notes/formats.md):

  compressed_tensors.py        vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py
                               (CompressedTensorsConfig: get_scheme, _is_wNa16_group_channel, apply_vllm_mapper)
  compressed_tensors_moe.py    .../compressed_tensors/compressed_tensors_moe.py (get_moe_method: the scheme of a
                               FusedMoE layer is read from `<layer>.0.gate_proj/up_proj/down_proj`, which must agree)
  compressed_tensors_wNa16.py  .../compressed_tensors/schemes/compressed_tensors_wNa16.py (2..8 bits, symmetric
                               uint2b2..uint8b128 or asymmetric uint2..uint8, group or channel strategy)
  fused_humming_moe.py         widths other than 4/8 run on the Humming kernels (PR #48918; `humming-kernels` is a
                               vLLM dependency); 3-bit is the least proven width
  utils.py                     .../compressed_tensors/utils.py (find_matched_target, should_ignore_layer: `re:` targets
                               and ignore entries are `re.match`ed against vLLM's module names; a `Linear` target
                               also matches by class name, so routers must be listed in `ignore`)
  ernie45_vl_moe.py / ernie45_moe.py   the family's module names (the adapter's `vllm_unit`) and load_weights

Serving: `vllm serve DIR --trust-remote-code` (no --quantization flag: the config says compressed-tensors).
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from compressed_tensors.utils.match import match_name

from ...adapters import adapter_for
from ...errors import CheckpointError
from ...roles import ROUTED_EXPERT
from ...scheme import QuantScheme
from ...variant_dir import remote_code_problems
from ...verdicts import Check, from_offenders, passed, skipped
from .config import module_scheme
from .integrity import CTVariant
from .packing import MAX_BITS, MIN_BITS, PARTS

V = "vLLM >= 0.34"
MIN_VLLM = "0.34"
SRC_CFG = f"{V} compressed_tensors.py (CompressedTensorsConfig._is_wNa16_group_channel) + compressed_tensors_wNa16.py"
SRC_MOE = f"{V} compressed_tensors_moe.py (get_moe_method) + fused_humming_moe.py (PR #48918)"
SRC_MATCH = f"{V} compressed_tensors/utils.py (find_matched_target, should_ignore_layer)"
SRC_LOAD = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeForCausalLM.load_weights) / ernie45_moe.py"
SRC_VL_CFG = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeMoE) + ernie45_vl.py (vision/resampler config fields)"
SRC_REMOTE = "transformers 5.25 dynamic_module_utils.get_class_from_dynamic_module (auto_map -> MODULE.py)"
SERVE = f"vLLM >= {MIN_VLLM} (compressed-tensors WNA16): vllm serve DIR --trust-remote-code"


@dataclass
class Member:
    module: str  # checkpoint module
    shard: str  # q/k/v/gate/up/down/"" within its vLLM unit
    scheme: QuantScheme | None  # as stored (None: float)
    vllm_name: str  # the name vLLM matches targets/ignore against for this member


class View:
    """The variant's modules grouped into vLLM's modules (adapter.vllm_unit)."""

    def __init__(self, v: CTVariant):
        self.v = v
        self.adapter = adapter_for(v.config, where=str(v.path / "config.json"))
        self.units: dict[tuple[str, str], list[Member]] = defaultdict(list)
        self.layer: dict[str, tuple] = {}
        codes = v.codes
        modules = {m: codes.scheme(m) for m in codes.modules}
        for name in codes.kept:
            module, _, leaf = name.rpartition(".")
            if leaf in ("weight", "weight_1") and len(codes.ckpt.info(name).shape) == 2 and module not in modules:
                modules[module] = None
        for module, scheme in sorted(modules.items()):
            try:
                role = self.adapter.role_of(f"{module}.weight")
            except CheckpointError:
                continue
            prefix, kind, shard = self.adapter.vllm_unit(module, role)
            if prefix is None:
                continue
            if kind == "linear":
                vname = f"{prefix.rpartition('.')[0]}.{module.rpartition('.')[2]}"
            elif kind == "moe":
                vname = f"{prefix}.0.{shard}_proj"
            else:
                vname = prefix
            self.units[(prefix, kind)].append(Member(module, shard, scheme, vname))
            self.layer[prefix] = (role.layer, role.modality)

    def of_kind(self, kind: str) -> dict[str, list[Member]]:
        return {p: ms for (p, k), ms in sorted(self.units.items()) if k == kind}

    def resolve(self, name: str) -> tuple[str | None, QuantScheme | None]:
        """How vLLM's compressed-tensors config resolves one of its names: ignored or untargeted -> None."""
        return module_scheme(self.v.codes.config, name)

    def moe_sizes(self, prefix: str) -> tuple[int, int]:
        s = self.adapter.shape
        return s.hidden_size, s.expert_intermediate[self.layer[prefix][1] or "text"]


def _label(s: QuantScheme | None) -> str:
    if s is None:
        return "float"
    return f"{s.bits}-bit {'ch' if s.group_size == -1 else f'g{s.group_size}'}{'' if s.sym else ' asym'}"


def vllm_quant_config(view: View) -> Check:
    """Every config group a WNA16 scheme vLLM takes: integer weights of 2..8 bits, group or channel
    strategy, symmetric or not, static, no activation quantization, no act-order.
    Source: vLLM compressed_tensors.py _is_wNa16_group_channel, compressed_tensors_wNa16.py
    (WNA16_SUPPORTED_TYPES_MAP: uint2b2..uint8b128, uint2..uint8)."""
    bad = []
    for name, g in view.v.codes.config.config_groups.items():
        w = g.weights
        if w is None or w.type != "int" or not MIN_BITS <= w.num_bits <= MAX_BITS:
            bad.append(f"config group {name}: weights {w and w.type} {w and w.num_bits}-bit; WNA16 takes int 2..8 bits")
        elif w.strategy not in ("group", "channel") or w.dynamic:
            bad.append(f"config group {name}: strategy {w.strategy} (dynamic {w.dynamic}); WNA16 takes static group "
                       "or channel")
        elif g.input_activations is not None or g.output_activations is not None:
            bad.append(f"config group {name}: quantizes activations; this is a weight-only (A16) variant")
        elif w.actorder not in (None, "weight"):
            bad.append(f"config group {name}: actorder {w.actorder}")
    return from_offenders("vllm.quant_config", bad, "vLLM's compressed-tensors WNA16 path would not take it", SRC_CFG)


def vllm_config_flavour(view: View) -> Check:
    """The family's config must be one vLLM's model code builds (the adapter's facts; for ERNIE-4.5-VL
    the remote-code flavour). Source: vLLM ernie45_vl_moe.py, ernie45_vl.py."""
    bad = view.adapter.vllm_config_problems(view.v.config)
    if bad is None:
        return passed("vllm.config_flavour", SRC_VL_CFG, "vLLM reads this family's transformers config as it is")
    return from_offenders("vllm.config_flavour", bad,
                          "vLLM's model code for this family cannot build the model from this config", SRC_VL_CFG)


def vllm_remote_code(view: View) -> Check:
    """Every `auto_map` class needs its MODULE.py in the variant (served with --trust-remote-code)."""
    return from_offenders("vllm.remote_code", remote_code_problems(view.v.config, view.v.path),
                          "copy the source repo's remote-code *.py files", SRC_REMOTE)


def vllm_key_names(view: View) -> Check:
    """Every tensor name maps to a vLLM parameter: a module's weight_packed/weight_scale/weight_shape/
    weight_zero_point where its `.weight` would (load_weights substitutes the suffix), everything else
    as the family's loader names it. Source: vLLM ernie45_vl_moe.py / ernie45_moe.py load_weights."""
    n_experts = sum(view.adapter.shape.experts.values())
    rxs = [re.compile(a) for a in view.adapter.vllm_tensor_patterns()]
    bad = []
    for name in view.v.codes.ckpt.names():
        module, _, part = name.rpartition(".")
        as_weight = f"{module}.weight" if part in PARTS else name
        m = next((rx.fullmatch(as_weight) for rx in rxs if rx.fullmatch(as_weight)), None)
        if m is None:
            bad.append(f"{name}: no vLLM parameter takes this name")
        elif "k" in m.groupdict() and m["k"] is not None and int(m["k"]) >= n_experts:
            bad.append(f"{name}: expert {m['k']} beyond the {n_experts} the config declares")
    return from_offenders("vllm.key_names", bad, "vLLM's loader would raise KeyError on it", SRC_LOAD)


def vllm_router_unquantized(view: View) -> Check:
    """Routers stay float and are excluded from quantization under vLLM's own names (on ERNIE-4.5-VL
    `...mlp.text_experts_gate` / `...mlp.vision_experts_gate`, ReplicatedLinear): `ignore` must match
    them and no config group may target them.
    Source: vLLM compressed_tensors/utils.py should_ignore_layer / find_matched_target; ernie45_vl_moe.py
    Ernie4_5_VLMoeMoE; shared/notes/formats.md."""
    bad = []
    ignore = view.v.codes.config.ignore or []
    for prefix, members in view.of_kind("router").items():
        for m in members:
            if m.scheme is not None:
                bad.append(f"{m.module} (router) is stored quantized")
        if not any(match_name(prefix, i) for i in ignore):
            bad.append(f"{prefix}: vLLM's router name is not in `ignore`")
        group, s = view.resolve(prefix)
        if s is not None:
            bad.append(f"{prefix}: config group {group} targets vLLM's router")
    return from_offenders("vllm.router_unquantized", bad, "routers must stay float under vLLM's names", SRC_MATCH)


def vllm_fused_groups(view: View) -> Check:
    """One stored scheme per vLLM module that fuses checkpoint modules (q/k/v, gate/up, every routed
    expert of a layer and modality): one FusedMoE layer has one quant method and only expert 0's scheme
    is read, so per-expert widths within a layer cannot be served.
    Source: vLLM compressed_tensors_moe.py get_moe_method; compressed_tensors.py get_scheme (fused shards)."""
    bad = []
    for (prefix, kind), members in sorted(view.units.items()):
        if kind not in ("linear", "moe") or len(members) < 2:
            continue
        kinds = defaultdict(list)
        for m in members:
            kinds[_label(m.scheme)].append(m.module)
        if len(kinds) > 1:
            parts = ", ".join(f"{k} x{len(v)} (e.g. {v[0]})" for k, v in sorted(kinds.items()))
            bad.append(f"{prefix} mixes {parts}")
    return from_offenders("vllm.fused_groups", bad, "a fused vLLM module takes one scheme for all its members",
                          SRC_MOE)


def vllm_targets(view: View) -> Check:
    """What vLLM resolves from config_groups/ignore under its own names must be what the files hold:
    each shard of a fused linear (`...self_attn.q_proj` under `language_model.` on ERNIE-4.5-VL), and for
    a FusedMoE layer `<layer>.0.gate_proj/up_proj/down_proj` (they must agree, else vLLM raises "All MoE
    projections need to have same quantization scheme"); a float module must resolve to no scheme.
    Source: vLLM compressed_tensors/utils.py find_matched_target / should_ignore_layer,
    compressed_tensors_moe.py get_moe_method."""
    bad = []
    for (prefix, kind), members in sorted(view.units.items()):
        if kind == "router":
            continue
        read = {m.vllm_name: view.resolve(m.vllm_name)[1] for m in members}
        if kind == "moe" and len({_label(s) for s in read.values()}) > 1:
            each = ", ".join(f"{n.rpartition('.')[2]} {_label(s)}" for n, s in read.items())
            bad.append(f"{prefix}: vLLM resolves {each} (must agree)")
            continue
        for m in members:
            got = read[m.vllm_name]
            if _label(got) != _label(m.scheme):
                bad.append(f"{m.vllm_name}: vLLM reads {_label(got)}, the file holds {_label(m.scheme)} ({m.module})")
    return from_offenders("vllm.targets", bad, "vLLM would allocate another scheme than the files hold", SRC_MATCH)


def vllm_moe_bits(view: View) -> Check:
    """Routed experts at 2..8 bits: 4 and 8 run on the Marlin WNA16 MoE kernels, other widths on the
    Humming kernels; 3-bit is the width least proven end to end (passes with that note).
    Source: vLLM compressed_tensors_moe.py get_moe_method, fused_humming_moe.py."""
    bad, three = [], []
    for prefix, members in view.of_kind("moe").items():
        for b in sorted({m.scheme.bits for m in members if m.scheme is not None}):
            if not MIN_BITS <= b <= MAX_BITS:
                bad.append(f"{prefix}: {b}-bit experts")
            elif b == 3:
                three.append(prefix)
    if not bad and three:
        return passed("vllm.moe_bits", SRC_MOE, f"3-bit experts ({len(three)} FusedMoE layers): Humming kernels, "
                      "the width least proven end to end")
    return from_offenders("vllm.moe_bits", bad, "vLLM's WNA16 MoE takes 2..8 bits", SRC_MOE)


def vllm_moe_group_size(view: View) -> Check:
    """One group size per FusedMoE layer, dividing both the hidden size (gate/up input) and the expert
    intermediate size (down input). Source: shared/notes/formats.md (vLLM >= 0.34); compressed_tensors_moe.py
    (w13/w2 scales allocated from one group size)."""
    bad = []
    for prefix, members in view.of_kind("moe").items():
        groups = sorted({m.scheme.group_size for m in members if m.scheme is not None})
        H, I = view.moe_sizes(prefix)
        if len(groups) > 1:
            bad.append(f"{prefix}: group sizes {groups}; one per FusedMoE layer")
        elif groups and groups[0] != -1 and (H % groups[0] or I % groups[0]):
            bad.append(f"{prefix}: group {groups[0]} does not divide hidden {H} and intermediate {I}")
    return from_offenders("vllm.moe_group_size", bad, "quantize with a --group-size dividing hidden and "
                          "intermediate sizes", SRC_MOE)


def vllm_vision_unquantized(view: View) -> Check:
    """The vision tower and resampler stay float (vLLM builds them unquantized). Source: vLLM ernie45_vl.py."""
    bad = [m.module for ms in view.of_kind("vision").values() for m in ms if m.scheme is not None]
    return from_offenders("vllm.vision_unquantized", sorted(bad), "vision tower and resampler must stay float",
                          f"{V} ernie45_vl.py")


VLLM_RULES = (vllm_quant_config, vllm_config_flavour, vllm_remote_code, vllm_key_names, vllm_router_unquantized,
              vllm_fused_groups, vllm_targets, vllm_moe_bits, vllm_moe_group_size, vllm_vision_unquantized)


def check_vllm(v: CTVariant) -> tuple[list[Check], str]:
    if v.codes is None:
        return [skipped("vllm.files", f"the variant cannot be read: {v.problem}")], ""
    view = View(v)
    return [rule(view) for rule in VLLM_RULES], SERVE


def routed_expert_modules(v: CTVariant) -> list[str]:
    adapter = adapter_for(v.config, where=str(v.path / "config.json"))
    out = []
    for m in v.codes.modules:
        try:
            if adapter.role_of(f"{m}.weight").kind == ROUTED_EXPERT:
                out.append(m)
        except CheckpointError:
            continue
    return out
