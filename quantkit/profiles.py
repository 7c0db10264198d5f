"""Profiles: declarative per-role quantization recipes (`profiles/*.yaml`).

A profile is an ordered list of rules; the first rule that matches a tensor decides its scheme.
A rule matches by `role` (a kind such as `routed_expert`, or a label such as `routed_expert.vision`,
or a list of them) and/or by `name` (a regex searched in the tensor name). It either says
`keep: true` (stay at source precision, bit-identical) or gives `bits`, `group_size`, `sym`,
`method`, `desc_act`. Tensors no rule matches are kept, and that is reported by `inspect`/`plan`.

`format` is `gptq` (the GPTQ checkpoint format, default) or `gguf` (one llama.cpp file; see
quantkit/gguf). A gguf profile's rules may name the GGML type instead of bits: `gguf_type: Q4_0`
sets bits, group size and symmetry to the ones that type stores exactly (Q8_0, Q4_0, Q4_1, Q3_K,
Q2_K; quantkit.gguf.types); kept tensors are F32 (routers, router bias, norms) or their source dtype.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .errors import QuantkitError
from .quantize.scheme import SUPPORTED_BITS, QuantScheme
from .roles import ALL_KINDS, Role

PROFILE_DIR = Path(__file__).parent / "profiles"
_RULE_KEYS = {"role", "name", "keep", "bits", "group_size", "sym", "method", "desc_act", "why", "gguf_type"}
FORMATS = ("gptq", "gguf")
_TOP_KEYS = {"name", "family", "format", "description", "rules"}


@dataclass(frozen=True)
class Rule:
    roles: tuple[str, ...] = ()
    name: str | None = None
    scheme: QuantScheme | None = None  # None = keep
    why: str = ""

    def matches(self, tensor: str, role: Role) -> bool:
        if self.roles and role.kind not in self.roles and role.label not in self.roles:
            return False
        if self.name is not None and not re.search(self.name, tensor):
            return False
        return True


@dataclass(frozen=True)
class Profile:
    name: str
    family: str
    format: str = "gptq"
    description: str = ""
    rules: tuple[Rule, ...] = field(default_factory=tuple)
    source: str = ""

    def scheme_for(self, tensor: str, role: Role) -> QuantScheme | None:
        for rule in self.rules:
            if rule.matches(tensor, role):
                return rule.scheme
        return None

    def with_overrides(self, *, expert_bits: int | None = None, group_size: int | None = None,
                       method: str | None = None) -> "Profile":
        """`--bits` sets the routed experts' bits; `--group-size` and `--method` apply to every
        quantized rule."""
        rules = []
        for r in self.rules:
            s = r.scheme
            if s is not None:
                if expert_bits is not None and "routed_expert" in r.roles:
                    s = replace(s, bits=expert_bits)
                if group_size is not None:
                    s = replace(s, group_size=group_size)
                if method is not None:
                    s = replace(s, method=method)
            rules.append(replace(r, scheme=s))
        return replace(self, rules=tuple(rules))

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "format": self.format, "source": self.source,
                "rules": [{"role": list(r.roles), "name": r.name,
                           "scheme": r.scheme.to_dict() if r.scheme else "keep"} for r in self.rules]}


def _parse_rule(raw, where: str, fmt: str = "gptq") -> Rule:
    if not isinstance(raw, dict):
        raise QuantkitError(f"{where}: each rule must be a mapping, got {raw!r}")
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise QuantkitError(f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_RULE_KEYS))}")
    roles = raw.get("role", [])
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    for r in roles:
        if r.split(".")[0] not in ALL_KINDS:
            raise QuantkitError(f"{where}: unknown role {r!r}; known: {', '.join(ALL_KINDS)}")
    name = raw.get("name")
    if name is not None:
        try:
            re.compile(name)
        except re.error as e:
            raise QuantkitError(f"{where}: bad name regex {name!r} ({e})")
    if not roles and name is None:
        raise QuantkitError(f"{where}: a rule needs `role` or `name`")
    if raw.get("keep"):
        if "bits" in raw or "gguf_type" in raw:
            raise QuantkitError(f"{where}: a rule cannot both keep and set bits")
        return Rule(roles, name, None, raw.get("why", ""))
    if "gguf_type" in raw:
        raw = _gguf_type_fields(raw, where, fmt)
    if "bits" not in raw:
        raise QuantkitError(f"{where}: a rule needs `keep: true` or `bits`")
    try:
        scheme = QuantScheme(bits=int(raw["bits"]), group_size=int(raw.get("group_size", 128)),
                             sym=bool(raw.get("sym", True)), method=str(raw.get("method", "rtn")),
                             desc_act=bool(raw.get("desc_act", False)))
    except (TypeError, ValueError) as e:
        raise QuantkitError(f"{where}: {e}")
    return Rule(roles, name, scheme, raw.get("why", ""))


def load_profile(path_or_name: str | Path) -> Profile:
    """A profile file, or the name of a shipped profile (e.g. `ernie45-vl-w4`)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = PROFILE_DIR / f"{path_or_name}.yaml"
        if not shipped.is_file():
            names = ", ".join(p.stem for p in sorted(PROFILE_DIR.glob("*.yaml")))
            raise QuantkitError(f"--profile {path_or_name}: no such file or shipped profile; shipped: {names}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise QuantkitError(f"{path}: invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(raw, dict):
        raise QuantkitError(f"{path}: a profile must be a mapping with `family` and `rules`")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise QuantkitError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if "family" not in raw or not isinstance(raw.get("rules"), list):
        raise QuantkitError(f"{path}: a profile needs `family` and a list of `rules`")
    fmt = raw.get("format", "gptq")
    if fmt not in FORMATS:
        raise QuantkitError(f"{path}: format {fmt!r} is not supported (supported: {', '.join(FORMATS)})")
    rules = tuple(_parse_rule(r, f"{path} rule {i + 1}", fmt) for i, r in enumerate(raw["rules"]))
    return Profile(name=raw.get("name", path.stem), family=raw["family"], format=fmt,
                   description=raw.get("description", ""), rules=rules, source=str(path))


def _gguf_type_fields(raw: dict, where: str, fmt: str) -> dict:
    """`gguf_type: Q4_0` -> the bits / group_size / sym that type stores; explicit fields must agree."""
    from .gguf.types import QUANT_TYPES, known_types_text

    if fmt != "gguf":
        raise QuantkitError(f"{where}: `gguf_type` needs `format: gguf` at the top of the profile")
    t = QUANT_TYPES.get(str(raw["gguf_type"]))
    if t is None:
        raise QuantkitError(f"{where}: unknown gguf_type {raw['gguf_type']!r}; quantized types: {known_types_text()} "
                            "(keep a tensor with `keep: true`)")
    implied = {"bits": t.bits, "group_size": t.group, "sym": t.sym}
    for key, value in implied.items():
        if key in raw and raw[key] != value:
            raise QuantkitError(f"{where}: gguf_type {t.name} is {t.label}, but the rule says {key}: {raw[key]}")
    return {**raw, **implied}


def check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise QuantkitError(f"--bits {bits}: supported bit widths are {', '.join(map(str, SUPPORTED_BITS))}")
    return bits


def profile_for_bits(family_profile: str, bits: int, fmt: str = "gptq") -> Profile:
    """`--bits N`: the family's shipped `-wN` profile (`-gguf-wN` for format gguf), else its `-w4`
    profile with expert bits N."""
    check_bits(bits)
    if fmt == "gguf":
        family_profile = f"{family_profile}-gguf"
    exact = PROFILE_DIR / f"{family_profile}-w{bits}.yaml"
    if exact.is_file():
        return load_profile(exact)
    return load_profile(PROFILE_DIR / f"{family_profile}-w4.yaml").with_overrides(expert_bits=bits)
