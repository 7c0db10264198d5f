"""The `quantization_config` block of a GPTQ variant's config.json, and how loaders read it.

Base fields (bits, group_size, sym, desc_act) take the most common scheme among quantized modules
(the routed experts). `dynamic` (GPTQModel's format, also read by vLLM and transformers) holds:
  "+:REGEX": {"bits": .., "group_size": ..}  modules quantized differently from the base
  "-:REGEX": {}                              modules left unquantized
Patterns are module names with layer numbers generalised to `\\d+`; expert numbers are kept as an
explicit alternation where the schemes differ between experts (e.g. vision experts' narrow down_proj).
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

from ...errors import PlanRefused
from ...plan import Plan, TensorPlan
from ...scheme import QuantScheme

_INDEX = re.compile(r"\.\d+\.")


def _fields(s: QuantScheme) -> dict:
    return {"bits": s.bits, "group_size": s.group_size, "sym": s.sym, "desc_act": s.desc_act}


def _expert_number(module: str) -> int:
    """A routed expert's number as its module name spells it: the last index in the name
    (`model.layers.3.mlp.experts.70.down_proj` -> 70; the role's `expert` counts within a modality)."""
    return int(list(_INDEX.finditer(module))[-1].group()[1:-1])


def _regex(module: str, expert_ids: set[int] | None = None) -> str:
    """An anchored regex for `module` with every index generalised to `\\d+`, except, when `expert_ids`
    is given (a routed expert's module), its expert number (the last index), which becomes an explicit
    alternation."""
    out, pos = [], 0
    indices = list(_INDEX.finditer(module))
    for m in indices:
        out.append(re.escape(module[pos:m.start()]))
        is_expert = m is indices[-1]
        if is_expert and expert_ids is not None:
            out.append(r"\.(?:" + "|".join(str(k) for k in sorted(expert_ids)) + r")\.")
        else:
            out.append(r"\.\d+\.")
        pos = m.end()
    out.append(re.escape(module[pos:]))
    return "^" + "".join(out) + "$"


def build_quantization_config(plan: Plan, adapter=None) -> dict:
    quantized = plan.quantized()
    if not quantized:
        raise PlanRefused(f"profile {plan.profile.name}: quantizes no tensor of {plan.source}")
    base = dict(Counter(tuple(_fields(e.scheme).items()) for e in quantized).most_common(1)[0][0])
    dynamic: dict[str, dict] = {}
    # Quantized modules that differ from the base, grouped by generalised name and override.
    groups: dict[tuple, set[int]] = defaultdict(set)
    routed: set[tuple] = set()  # groups of routed experts' modules
    for e in quantized:
        override = tuple((k, v) for k, v in _fields(e.scheme).items() if v != base[k])
        if override:
            key = (_INDEX.sub(".0.", e.module), override)
            if e.role.kind == "routed_expert":
                routed.add(key)
                groups[key].add(_expert_number(e.module))
            else:
                groups[key].add(-1)
    for (module, override), experts in groups.items():
        ids = experts if (module, override) in routed else None
        dynamic.setdefault(f"+:{_regex(module, ids)}", dict(override))
    # Kept modules: their float weights stay, so loaders must not look for qweight there.
    for e in plan.entries:
        if not e.quantized and _is_module_weight(e):
            dynamic.setdefault(f"-:{_regex(e.module)}", {})
    if adapter is not None:
        _add_vllm_rules(plan, adapter, base, dynamic)
    cfg = {"quant_method": "gptq", "checkpoint_format": "gptq", **base, "dynamic": dynamic}
    # Generalised patterns can swallow an exception (one layer planned differently): pin those
    # modules with exact rules in front, since loaders take the first matching rule.
    exact = {}
    for e in plan.entries:
        if _is_module_weight(e) or e.quantized:
            if module_scheme(cfg, e.module) != _comparable(e.scheme):
                exact[f"+:^{re.escape(e.module)}$" if e.quantized else f"-:^{re.escape(e.module)}$"] = (
                    {k: v for k, v in _fields(e.scheme).items() if v != base[k]} if e.quantized else {})
    if exact:
        cfg["dynamic"] = {**exact, **dynamic}
    return cfg


def _add_vllm_rules(plan: Plan, adapter, base: dict, dynamic: dict) -> None:
    """The same rules under vLLM's module names (it matches `dynamic` against its own fused modules:
    `language_model.model.layers.N.self_attn.qkv_proj`, `...mlp.text_experts`), for every vLLM module
    whose checkpoint members share one scheme; a unit with mixed members gets no rule (the plan
    refuses those for fused groups, and `verify` reports the rest)."""
    units: dict[str, set] = defaultdict(set)
    for e in plan.entries:
        if e.quantized or _is_module_weight(e):
            prefix, kind, _ = adapter.vllm_unit(e.module, e.role)
            if prefix is not None and kind != "vision":
                units[prefix].add(None if e.scheme is None else tuple(_fields(e.scheme).items()))
    # One rule per generalised name (layer numbers as \\d+) where every layer agrees; exact rules per
    # module where layers differ (e.g. bits allocated per layer), so no layer inherits another's scheme.
    by_name: dict[str, dict[str, tuple | None]] = defaultdict(dict)
    for prefix, schemes in sorted(units.items()):
        if len(schemes) == 1:
            by_name[_regex(prefix)][prefix] = next(iter(schemes))
    for rx, members in by_name.items():
        distinct = set(members.values())
        rules = [(rx, distinct.pop())] if len(distinct) == 1 else \
            [(f"^{re.escape(prefix)}$", scheme) for prefix, scheme in sorted(members.items())]
        for key, scheme in rules:
            if scheme is None:
                dynamic.setdefault(f"-:{key}", {})
            elif dict(scheme) != base:
                dynamic.setdefault(f"+:{key}", {k: v for k, v in scheme if v != base[k]})


def _comparable(s: QuantScheme | None) -> QuantScheme | None:
    return None if s is None else QuantScheme(bits=s.bits, group_size=s.group_size, sym=s.sym, desc_act=s.desc_act)


def _is_module_weight(e: TensorPlan) -> bool:
    return e.name.endswith((".weight", ".weight_1")) and len(e.shape) == 2


def module_scheme(qcfg: dict, module: str) -> QuantScheme | None:
    """How a GPTQModel-style loader reads `module`: None if a `-:` rule skips it, else the base
    scheme with the first matching `+:` (or bare) rule's overrides."""
    fields = {k: qcfg[k] for k in ("bits", "group_size", "sym", "desc_act") if k in qcfg}
    for key, override in (qcfg.get("dynamic") or {}).items():
        neg = key.startswith("-:")
        rx = key[2:] if key[:2] in ("-:", "+:") else key
        if re.match(rx, module):
            if neg:
                return None
            fields.update({k: v for k, v in override.items() if k in fields or k in ("bits", "group_size", "sym")})
            break
    return QuantScheme(bits=int(fields["bits"]), group_size=int(fields["group_size"]),
                       sym=bool(fields.get("sym", True)), desc_act=bool(fields.get("desc_act", False)))
