"""vLLM's contract for a GPTQ variant, one rule per function (vLLM >= 0.34). Transformers' is in
transformers_rules.py; how vLLM sees the variant (its module names, `dynamic` resolution) in vllm_view.py.

Every rule says where it comes from. The facts were read (not copied) from vLLM's source and checked
against the vLLM 0.34 wheel (shared/notes/formats.md, "Serving limits seen in public loader code"):

  gptq_marlin.py    vllm/model_executor/layers/quantization/gptq_marlin.py
  humming.py        vllm/model_executor/layers/quantization/humming.py (+ fused_humming_moe.py)
  gptq_utils.py     vllm/model_executor/layers/quantization/utils/gptq_utils.py
  marlin_utils.py   vllm/model_executor/layers/quantization/utils/marlin_utils.py (check_moe_marlin_supports_layer)
  moe_wna16.py      vllm/model_executor/layers/quantization/moe_wna16.py
  ernie45_vl_moe.py vllm/model_executor/models/ernie45_vl_moe.py
  ernie45_vl.py     vllm/model_executor/models/ernie45_vl.py
  ernie45_moe.py    vllm/model_executor/models/ernie45_moe.py (text-only ERNIE-4.5 MoE)

How vLLM >= 0.34 reads a GPTQ MoE checkpoint (the facts the rules rest on):
- 4- or 8-bit symmetric everywhere: `quantization_config` becomes `gptq_marlin` (bits/group_size/sym/
  desc_act all given, (bits, sym) in {(4, True), (8, True)}, group_size -1/32/64/128:
  `is_gptq_marlin_compatible`); `vllm serve DIR` needs no flag (vLLM >= 0.32 already served these).
- 2- or 3-bit, or asymmetric (anywhere): served with `--quantization humming` (vLLM >= 0.34, PR #48918;
  `humming.py` reads the GPTQ schema with `dynamic` `+:` overrides and `-:` skips; the Humming kernels
  are a vLLM dependency). 3-bit is the least proven width end to end (Humming's repacking RFC named
  2/4/8). Without the flag gptq_marlin raises "Unsupported quantization config".
- Which linear layers are quantized is inferred from the safetensors dtypes (`maybe_update_config`).
- `dynamic` (`get_dynamic_override`) is matched with `re.match` against vLLM's *own* module names, in
  order, first match wins; `-:` skips the module, `+:` overrides bits/group_size/desc_act/sym. vLLM's
  names are not the checkpoint's: ERNIE-4.5-VL's language model lives under `language_model.model.`
  (`hf_to_vllm_mapper`), q/k/v are one `qkv_proj`, gate/up one `gate_up_proj`, and all routed experts
  of one layer and modality are one FusedMoE module `mlp.text_experts` / `mlp.vision_experts`.
- A FusedMoE module has one quant method: one bit width, one group size, one symmetry for all its
  experts' gate/up (w13) and down (w2); only expert 0's scheme is read, so per-expert widths within a
  layer cannot be served; the group size must divide hidden and intermediate sizes. On the
  gptq_marlin path, Marlin MoE needs hidden % 128 == 0 and intermediate % max(64, group) == 0 (base
  group size); otherwise the layer falls back to MoeWNA16, built from the base config alone.
- Routers stay unquantized (a quantized `mlp.gate` ends in `KeyError: ...gate.qweight`).
"""
from __future__ import annotations

import re
from collections import defaultdict

from ...variant_dir import remote_code_problems
from ...verdicts import Check, from_offenders, passed, skipped
from .integrity import VariantFiles
from .packing import GPTQ_BITS
from .vllm_view import (MARLIN_GROUPS, MARLIN_TYPES, Member, VllmView, act_order, checkpoint_name_hint, n_groups,
                        resolve_vllm, unit_label, zeros_symmetric)

V = "vLLM >= 0.34"
SRC_MARLIN = f"{V} gptq_marlin.py (GPTQMarlinConfig.TYPE_MAP, is_gptq_marlin_compatible, GPTQMarlinMoEMethod)"
SRC_HUMMING = f"{V} humming.py + fused_humming_moe.py (GPTQ 2/3-bit or asymmetric, --quantization humming; PR #48918)"
SRC_DYNAMIC = f"{V} utils/gptq_utils.py (get_dynamic_override, override_config) + ernie45_vl.py (hf_to_vllm_mapper)"
SRC_WNA16 = f"{V} moe_wna16.py (is_moe_wna16_compatible, MoeWNA16Method) + marlin_utils.py (check_moe_marlin_supports_layer)"
SRC_VL_LOAD = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeForCausalLM.load_weights) / ernie45_moe.py"
SRC_VL_CFG = f"{V} ernie45_vl_moe.py (Ernie4_5_VLMoeMoE) + ernie45_vl.py (vision/resampler config fields)"
SRC_REMOTE = "transformers 5.25 dynamic_module_utils.get_class_from_dynamic_module (auto_map -> MODULE.py)"
MIN_MARLIN, MIN_HUMMING = "0.32", "0.34"


def humming_reasons(view: VllmView) -> list[str]:
    """Why gptq_marlin cannot take the variant ([]: it can): a base or resolved module scheme that is
    not 4/8-bit symmetric. vLLM picks the method from the base fields, then gptq_marlin raises
    "Unsupported quantization config" on any module it resolves to another (bits, sym)."""
    q = view.v.qcfg or {}
    out = []
    if q.get("bits") is not None and (q.get("bits"), bool(q.get("sym", True))) not in MARLIN_TYPES:
        out.append(f"base scheme {q.get('bits')}-bit {'sym' if q.get('sym', True) else 'asym'}")
    for unit, members in sorted(view.units.items(), key=lambda kv: kv[0].prefix):
        if unit.kind in ("linear", "moe") and any(m.packed is not None for m in members):
            r = resolve_vllm(q, unit.prefix)
            if not r.skip and r.bits is not None and (r.bits, bool(r.sym)) not in MARLIN_TYPES:
                out.append(f"{unit.prefix}: {r.bits}-bit {'sym' if r.sym else 'asym'}")
    return out


def serve_command(view: VllmView) -> str:
    """The verdict's how-to: minimum vLLM version and the exact command."""
    humming = humming_reasons(view)
    if not humming:
        return f"vLLM >= {MIN_MARLIN} (gptq_marlin): vllm serve DIR --trust-remote-code"
    three = any(" 3-bit" in r for r in humming)
    return (f"vLLM >= {MIN_HUMMING} (Humming kernels: {humming[0]}{' ...' if len(humming) > 1 else ''}): "
            "vllm serve DIR --trust-remote-code --quantization humming"
            + ("; 3-bit is the width least proven end to end" if three else ""))


# -- vLLM rules -----------------------------------------------------------------------------------
def vllm_quant_config(view: VllmView) -> Check:
    """quantization_config must be one vLLM's GPTQ readers take: quant_method `gptq`, `checkpoint_format`
    gptq (v1 zero points), bits/group_size/sym/desc_act all present, base bits 2, 3, 4 or 8 (4/8 symmetric
    select gptq_marlin, the rest needs `--quantization humming`), a base group size of -1, 32, 64 or 128
    for gptq_marlin. Every `dynamic` key must be a regex and override only what vLLM reads (bits,
    group_size, desc_act, sym; anything else is silently ignored).
    Source: vLLM gptq_marlin.py GPTQMarlinConfig.is_gptq_marlin_compatible / TYPE_MAP,
    marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES, humming.py, utils/gptq_utils.py override_config."""
    q = view.v.qcfg or {}
    bad = []
    if q.get("quant_method") != "gptq":
        bad.append(f"quant_method {q.get('quant_method')!r}, not 'gptq'")
    if q.get("checkpoint_format", "gptq") != "gptq":
        bad.append(f"checkpoint_format {q.get('checkpoint_format')!r}: vLLM's GPTQ readers take v1 ('gptq')")
    missing = [k for k in ("bits", "group_size", "sym", "desc_act") if q.get(k) is None]
    if missing:
        bad.append(f"base fields missing: {', '.join(missing)}")
    elif q["bits"] not in GPTQ_BITS:
        bad.append(f"base bits {q['bits']}: vLLM's GPTQ readers take 2, 3, 4 or 8")
    elif (q["bits"], bool(q["sym"])) in MARLIN_TYPES and q["group_size"] not in MARLIN_GROUPS:
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
    return from_offenders("vllm.quant_config", bad, "vLLM's GPTQ readers would not load it as written",
                          SRC_MARLIN + "; " + SRC_HUMMING + "; " + SRC_DYNAMIC)


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
    return from_offenders("vllm.remote_code", remote_code_problems(view.v.config, view.v.path),
                          "copy the source repo's remote-code *.py files", SRC_REMOTE)


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
            bad.append(f"{unit_label(unit)} mixes {parts}")
    return from_offenders("vllm.fused_groups", bad, "a fused vLLM module takes one scheme for all its members",
                          f"{V} gptq_utils.py (is_layer_gptq_quantized, get_moe_quant_method), gptq_marlin.py")


def vllm_moe_bits(view: VllmView) -> Check:
    """Routed experts at 2, 3, 4 or 8 bits: 4/8-bit symmetric run on gptq_marlin (or its MoeWNA16
    fallback), 2/3-bit or asymmetric on the Humming kernels with `--quantization humming` (vLLM >= 0.34).
    3-bit is the width least proven end to end: the check passes with that note.
    Source: vLLM gptq_marlin.py GPTQMarlinMoEMethod, humming.py / fused_humming_moe.py (PR #48918)."""
    bad, three = [], []
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        bits = sorted({m.packed.bits for m in members if m.packed is not None and m.packed.bits})
        bad += [f"{unit_label(unit)}: {b}-bit experts" for b in bits if b not in GPTQ_BITS]
        three += [unit.prefix for b in bits if b == 3]
    if not bad and three:
        return passed("vllm.moe_bits", SRC_MARLIN + "; " + SRC_HUMMING,
                      f"3-bit experts ({len(three)} FusedMoE layers): served by the Humming kernels, the width "
                      "least proven end to end")
    return from_offenders("vllm.moe_bits", bad, "vLLM's GPTQ MoE kernels take 2, 3, 4 or 8 bits",
                          SRC_MARLIN + "; " + SRC_HUMMING)


def vllm_moe_sym(view: VllmView) -> Check:
    """The stored zero points must be what vLLM resolves for the FusedMoE layer: a layer read as
    symmetric (gptq_marlin's uint4b8/uint8b128 types, or `sym: true` for Humming) ignores qzeros, so
    asymmetric experts under a symmetric config would be read wrong. Checked on the stored qzeros.
    Source: vLLM gptq_marlin.py GPTQMarlinConfig.TYPE_MAP and GPTQMarlinMoEMethod; humming.py; moe_wna16.py
    (has_zp = not sym); utils/gptq_utils.py override_config."""
    bad = []
    q = view.v.qcfg or {}
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        asym = [m.module for m in members if m.packed is not None and m.packed.bits and not m.packed.problems
                and not zeros_symmetric(view.v, m.packed)]
        r = resolve_vllm(q, unit.prefix)
        if asym and not r.skip and r.sym:
            bad.append(f"{unit_label(unit)}: {len(asym)} asymmetric expert tensors (e.g. {asym[0]}), but vLLM "
                       f"resolves sym=true ({'dynamic ' + repr(r.rule) if r.rule else 'base config'})")
    return from_offenders("vllm.moe_sym", bad, "vLLM reads the experts' symmetry from the config",
                          SRC_MARLIN + "; " + SRC_HUMMING)


def vllm_moe_group_size(view: VllmView) -> Check:
    """One group size per FusedMoE layer (vLLM allocates w13 and w2 scales from one scheme: only expert
    0's is read), dividing both the hidden size (gate/up input) and the expert intermediate size (down
    input), on the Humming path. (On the gptq_marlin path vllm.dynamic checks the group counts Marlin or
    its MoeWNA16 fallback, which rounds groups up, allocates.) Source: shared/notes/formats.md (vLLM >= 0.34:
    "group size must divide hidden and intermediate sizes"); humming.py, fused_humming_moe.py."""
    if not humming_reasons(view):
        return passed("vllm.moe_group_size", SRC_HUMMING, "gptq_marlin path: group counts checked by vllm.dynamic")
    bad = []
    for unit, members in sorted(view.of_kind("moe").items(), key=lambda kv: kv[0].prefix):
        packed = [m for m in members if m.packed is not None and m.packed.bits and not m.packed.problems]
        groups = sorted({m.packed.group_size for m in packed if m.packed.group_size})
        H, I = view.moe_sizes(unit)
        if len(groups) > 1:
            bad.append(f"{unit_label(unit)}: group sizes {groups} (e.g. gate/up vs down); one per FusedMoE layer")
        elif groups and (H % groups[0] or I % groups[0]) and groups[0] not in (H, I):
            bad.append(f"{unit_label(unit)}: group {groups[0]} does not divide hidden {H} and intermediate {I}")
    return from_offenders("vllm.moe_group_size", bad, "quantize with a --group-size dividing hidden and "
                          "intermediate sizes", SRC_MARLIN + "; " + SRC_HUMMING)


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
                  and act_order(view.v, m.packed)]
        r = resolve_vllm(q, unit.prefix)
        if stored:
            bad.append(f"{unit_label(unit)}: {len(stored)} expert tensors stored with act-order (e.g. {stored[0]})")
        elif not r.skip and r.desc_act and any(m.packed for m in members):
            bad.append(f"{unit_label(unit)}: quantization_config resolves desc_act=true for the experts")
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
    down to >= 32 until it divides both dims; 8 bits only per-channel); with `--quantization humming`
    every module as resolved (groups dim/g).
    Source: vLLM gptq_utils.py get_dynamic_override / override_config / get_linear_quant_method,
    gptq_marlin.py GPTQMarlinConfig.get_quant_method / GPTQMarlinLinearMethod.create_weights /
    GPTQMarlinMoEMethod.create_weights, moe_wna16.py MoeWNA16Method.create_weights, ernie45_vl.py
    hf_to_vllm_mapper ("model." -> "language_model.model.")."""
    q = view.v.qcfg or {}
    if any(q.get(k) is None for k in ("bits", "group_size")):
        return skipped("vllm.dynamic", "no base bits/group_size in quantization_config (see vllm.quant_config)",
                       SRC_DYNAMIC)
    bad = []
    humming = bool(humming_reasons(view))
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
            return "base config: no dynamic key matches this vLLM name" + checkpoint_name_hint(q, members)

        how = how_for(packed)
        if unit.kind == "linear":
            if not humming and (r.bits, bool(r.sym)) not in MARLIN_TYPES:
                bad.append(f"{unit.prefix}: resolves to {r.bits}-bit {'sym' if r.sym else 'asym'} ({how}); "
                           "gptq_marlin raises 'Unsupported quantization config'")
                continue
            for m in packed:
                pm, how = m.packed, how_for([m])
                want = n_groups(pm.in_features, r.group_size)
                if r.group_size != -1 and pm.in_features % r.group_size:
                    bad.append(f"{unit.prefix} [{m.shard}]: group_size {r.group_size} ({how}) does not divide "
                               f"in_features {pm.in_features}")
                elif pm.bits != r.bits or pm.n_groups != want:
                    bad.append(f"{unit.prefix} [{m.shard}]: vLLM reads {r.bits}-bit with {want} group(s) ({how}), "
                               f"the file holds {pm.bits}-bit with {pm.n_groups} group(s) ({m.module})")
                elif act_order(view.v, pm) and not r.desc_act:
                    bad.append(f"{unit.prefix} [{m.shard}]: stored with act-order but vLLM resolves desc_act=false")
            continue
        H, I = view.moe_sizes(unit)
        g0 = q.get("group_size")
        marlin = H % 128 == 0 and I % max(64, g0) == 0 and g0 in MARLIN_GROUPS
        if humming:
            bits, g, path = r.bits, r.group_size, f"Humming, {how_for(packed[:1])}"
            expect = {"gate": n_groups(H, g), "up": n_groups(H, g), "down": n_groups(I, g)}
        elif marlin:
            bits, g, path = r.bits, r.group_size, f"Marlin MoE, {how_for(packed[:1])}"
            expect = {"gate": n_groups(H, g), "up": n_groups(H, g), "down": n_groups(I, g)}
        else:
            bits, g, path = q.get("bits"), g0, "MoeWNA16 fallback, base config only"
            gg = g
            while g != -1 and (I % gg or H % gg):
                gg //= 2
                if gg < 32:
                    bad.append(f"{unit_label(unit)}: MoeWNA16 cannot fit group {g} to hidden {H} / intermediate {I} "
                               "(assert group_size >= 32)")
                    break
            if bits == 8 and g != -1:
                bad.append(f"{unit_label(unit)}: MoeWNA16 fallback with 8-bit group {g}; MoeWNA16Method asserts "
                           "group_size == -1 for 8 bits (moe_wna16.py @0216619d)")
            expect = {"gate": n_groups(H, g, True), "up": n_groups(H, g, True), "down": n_groups(I, g, True)}
        wrong = [m for m in packed if m.packed.bits != bits or m.packed.n_groups != expect.get(m.shard)]
        if wrong:
            m = wrong[0]
            bad.append(f"{unit_label(unit)}: vLLM ({path}) reads {bits}-bit with {expect.get(m.shard)} group(s) for "
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
              vllm_fused_groups, vllm_moe_bits, vllm_moe_sym, vllm_moe_group_size, vllm_moe_act_order, vllm_dynamic,
              vllm_vision_unquantized)


def check_vllm(v: VariantFiles) -> tuple[list[Check], str]:
    """The rules' checks and the verdict's serve line (minimum vLLM version and command)."""
    view = VllmView(v)
    return [rule(view) for rule in VLLM_RULES], serve_command(view)
