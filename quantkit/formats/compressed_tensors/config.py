"""The `quantization_config` of a compressed-tensors variant, and how its readers resolve a module's
scheme from it.

    {"quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
     "config_groups": {"group_0": {"targets": ["re:...", ...], "weights": {num_bits, type: int, symmetric,
                                   group_size, strategy: group|channel}, "format": "pack-quantized"}, ...},
     "ignore": ["re:...", ...]}

Built and validated with compressed-tensors' own pydantic classes (QuantizationConfig, QuantizationScheme,
QuantizationArgs), so what is written is what its parser (and so transformers' and vLLM's) accepts.

How readers match a module (compressed-tensors 0.20 `utils/match.py` `match_name`; vLLM's
`compressed_tensors/utils.py` `find_matched_target` / `should_ignore_layer` use the same rule): a target
`re:X` matches a module name when `re.match(X, name)`; `ignore` is checked the same way and wins. The
names differ by reader: the checkpoint's (`model.layers.3.mlp.experts.5.up_proj`: compressed-tensors'
model-free decompressor), transformers' in-memory modules (`model.language_model.layers.3...` for
ERNIE-4.5-VL), and vLLM's (`language_model.model.layers.3.self_attn.q_proj`; a FusedMoE layer is
resolved through `<prefix>.0.gate_proj/up_proj/down_proj`, e.g. `...mlp.text_experts.0.up_proj`). So
every pattern is prefix-free (`(?:.*\\.)?layers\\.\\d+\\...$`), vLLM's expert-layer and router names
(from the adapter: `vllm_unit`) get patterns of their own where they differ from the checkpoint's,
and a pattern is generalised (layer and expert numbers -> `\\d+`) only as far as it still matches
modules of one scheme alone.

transformers 5.25 reads fused MoE experts with ONE scheme per model: the first config group with a
`re:` target that contains "experts" (`integrations/compressed_tensors.py` `get_experts_scheme`).
The routed experts' groups therefore come first.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict

from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
from compressed_tensors.utils.match import match_name

from ...errors import PlanRefused, VariantCorrupt
from ...plan import Plan, TensorPlan
from ...roles import ROUTED_EXPERT
from ...scheme import QuantScheme

QUANT_METHOD = "compressed-tensors"
PACK_FORMAT = "pack-quantized"
_INDEX = re.compile(r"\.(\d+)(?=\.|$)")
ANY_PREFIX = r"(?:.*\.)?"


def _key(s: QuantScheme | None) -> tuple | None:
    return None if s is None else (s.bits, s.group_size, s.sym)


def _tail(module: str) -> str:
    """The name from the component before its first index on: `model.layers.3.x` -> `layers.3.x`."""
    m = _INDEX.search(module)
    if m is None:
        return module
    return module[module[: m.start()].rfind(".") + 1:]


def _candidates(module: str, expert_ids: list[int] | None) -> list[str]:
    """Regexes for `module`, most general first: every index `\\d+`; the layer exact; the layer exact
    and the expert number as an alternation of `expert_ids`; the tail exact; the whole name."""
    tail = _tail(module)
    parts, idx = [], []
    pos = 0
    for m in _INDEX.finditer(tail):
        parts.append(re.escape(tail[pos:m.start()]))
        idx.append(m.group(1))
        pos = m.end()
    rest = re.escape(tail[pos:])

    def build(sub) -> str:
        return ANY_PREFIX + "".join(p + r"\." + sub(i, v) for i, (p, v) in enumerate(zip(parts, idx))) + rest + "$"

    out = [build(lambda i, v: r"\d+")] if idx else []
    if len(idx) > 1:
        out.append(build(lambda i, v: v if i == 0 else r"\d+"))
        if expert_ids:
            alt = "(?:" + "|".join(str(k) for k in sorted(expert_ids)) + ")"
            out.append(build(lambda i, v: v if i == 0 else (alt if i == len(idx) - 1 else r"\d+")))
    out.append(ANY_PREFIX + re.escape(tail) + "$")
    if tail != module:
        out.append(ANY_PREFIX + re.escape(module) + "$")
    return out


class _Namer:
    """Picks, for each name, the most general candidate pattern that matches names of its key alone."""

    def __init__(self, names: dict[str, tuple | None]):
        self.names = names
        self._seen: dict[str, set] = {}

    def keys_matched(self, pattern: str) -> set:
        if pattern not in self._seen:
            rx = re.compile(pattern)
            self._seen[pattern] = {k for n, k in self.names.items() if rx.match(n)}
        return self._seen[pattern]

    def pick(self, name: str, key, candidates: list[str]) -> str:
        for c in candidates:
            if self.keys_matched(c) == {key}:
                return c
        raise PlanRefused(f"internal: no compressed-tensors target matches {name} alone; please report this")


def _is_module_weight(e: TensorPlan) -> bool:
    return e.name.endswith((".weight", ".weight_1")) and len(e.shape) == 2


def _expert_number(module: str) -> int:
    return int(list(_INDEX.finditer(module))[-1].group(1))


def _args(key: tuple) -> QuantizationArgs:
    bits, g, sym = key
    if g == -1:
        return QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy="channel")
    return QuantizationArgs(num_bits=bits, type="int", symmetric=sym, group_size=g, strategy="group")


def build_quantization_config(plan: Plan, adapter) -> dict:
    """config_groups (one per distinct scheme, routed experts' first) and ignore for a plan."""
    quantized = plan.quantized()
    if not quantized:
        raise PlanRefused(f"profile {plan.profile.name}: quantizes no tensor of {plan.source}")
    for e in quantized:
        if e.scheme.desc_act:
            raise PlanRefused(f"tensor {e.name}: act-order (desc_act) needs `actorder: group` with weight_g_idx, "
                              "which compressed-tensors 0.20 removed (its config parser refuses it)")
    modules = {e.module: e for e in plan.entries if _is_module_weight(e) or e.quantized}
    keys = {m: _key(e.scheme) for m, e in modules.items()}
    vllm: dict[str, tuple | None] = {}  # vLLM's names that differ from the checkpoint's -> key
    units: dict[str, set] = defaultdict(set)
    for e in plan.entries:  # per tensor: one checkpoint module may hold two routers (`weight`, `weight_1`)
        if not (_is_module_weight(e) or e.quantized):
            continue
        m = e.module
        prefix, kind, _ = adapter.vllm_unit(m, e.role)
        if kind == "moe" and prefix != m.rpartition(".")[0].rpartition(".")[0]:
            units[prefix].add(keys[m])
        elif kind == "router" and prefix != m:
            vllm[prefix] = None
    for prefix, ks in units.items():
        if len(ks) == 1:  # a unit with mixed schemes is refused by the plan (or forced) and reported by verify
            for p in ("gate", "up", "down"):
                vllm[f"{prefix}.0.{p}_proj"] = next(iter(ks))
    namer = _Namer({**keys, **vllm})
    experts: dict[tuple, set[int]] = defaultdict(set)  # (layer, key) -> routed expert numbers
    for m, e in modules.items():
        if e.role.kind == ROUTED_EXPERT and e.quantized:
            experts[(e.role.layer, keys[m])].add(_expert_number(m))
    targets: dict[tuple, list[str]] = defaultdict(list)
    ignore: list[str] = []
    for name, key in sorted({**keys, **vllm}.items()):
        e = modules.get(name)
        ids = sorted(experts[(e.role.layer, key)]) if e is not None and e.role.kind == ROUTED_EXPERT else None
        pattern = "re:" + namer.pick(name, key, _candidates(name, ids))
        bucket = ignore if key is None else targets[key]
        if pattern not in bucket:
            bucket.append(pattern)
    routed = Counter(keys[e.module] for e in quantized if e.role.kind == ROUTED_EXPERT)
    order = sorted(targets, key=lambda k: (-routed.get(k, 0), -sum(1 for v in keys.values() if v == k), k))
    groups = {f"group_{i}": QuantizationScheme(targets=targets[k], weights=_args(k), format=PACK_FORMAT)
              for i, k in enumerate(order)}
    cfg = QuantizationConfig(config_groups=groups, quant_method=QUANT_METHOD, format=PACK_FORMAT,
                             quantization_status="compressed", ignore=ignore)
    return cfg.to_dict()


def parse_config(qcfg: dict | None, where: str) -> QuantizationConfig:
    """The variant's quantization_config as compressed-tensors reads it, or VariantCorrupt in one line."""
    if not qcfg or qcfg.get("quant_method") != QUANT_METHOD:
        raise VariantCorrupt(f"{where}: no compressed-tensors quantization_config; not a compressed-tensors variant")
    try:
        return QuantizationConfig.model_validate(qcfg)
    except (ValueError, TypeError) as e:
        first = str(e).splitlines()
        raise VariantCorrupt(f"{where}: compressed-tensors cannot read its quantization_config "
                             f"({' '.join(first[:3])})")


def scheme_of_args(args: QuantizationArgs) -> QuantScheme:
    g = -1 if args.strategy == "channel" else int(args.group_size)
    return QuantScheme(bits=int(args.num_bits), group_size=g, sym=bool(args.symmetric))


def module_scheme(cfg: QuantizationConfig, module: str) -> tuple[str | None, QuantScheme | None]:
    """(group name, scheme) of a checkpoint module as compressed-tensors' model-free reader resolves
    it (the first group whose targets match and that `ignore` does not exclude); (None, None) if none."""
    if any(match_name(module, ign) for ign in cfg.ignore or ()):
        return None, None
    for name, group in cfg.config_groups.items():
        if group.weights is not None and any(match_name(module, t) for t in group.targets):
            return name, scheme_of_args(group.weights)
    return None, None
