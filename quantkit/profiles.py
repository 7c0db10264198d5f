"""Profiles: declarative per-role quantization recipes (`profiles/*.yaml`).

A profile is an ordered list of rules; the first rule that matches a tensor decides its scheme.
A rule matches by `role` (a kind such as `routed_expert`, or a label such as `routed_expert.vision`,
or a list of them) and/or by `name` (a regex searched in the tensor name). It either says
`keep: true` (stay at source precision, bit-identical) or gives `bits`, `group_size`, `sym`,
`method`, `desc_act`. Tensors no rule matches are kept, and that is reported by `inspect`/`plan`.

`format` names a registered output format (quantkit.format; the default format when absent). A
format may allow keys of its own in rules (`Format.rule_keys`) and resolves them into bits, group
size and symmetry (`Format.rule_fields`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from .errors import ProfileError, UsageError
from .format import default_format, format_names, get_format
from .roles import ALL_KINDS, Role
from .scheme import METHODS, SUPPORTED_BITS, QuantScheme

PROFILE_DIR = Path(__file__).parent / "profiles"
_RULE_KEYS = {"role", "name", "keep", "bits", "group_size", "sym", "method", "desc_act", "why"}
_TOP_KEYS = {"name", "family", "format", "description", "rules"}
# The type every common key must have as YAML writes it (no coercion: `sym: 'false'` is a string).
_BOOL_KEYS = ("keep", "sym", "desc_act")
_INT_KEYS = ("bits", "group_size")
_STR_KEYS = ("name", "method", "why")


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
    format: str = field(default_factory=lambda: default_format().name)
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
        """`--bits` sets the routed experts' bits (as the format stores that width: GGUF's 3-bit is
        Q3_K's grid, not the 4-bit rule's group and symmetry; a rule that also names other roles is
        split, so they keep theirs); `--group-size` and `--method` apply to every quantized rule."""
        def common(s: QuantScheme | None) -> QuantScheme | None:
            if s is not None and group_size is not None:
                s = replace(s, group_size=group_size)
            if s is not None and method is not None:
                s = replace(s, method=method)
            return s

        rules = []
        for r in self.rules:
            if r.scheme is not None and expert_bits is not None and "routed_expert" in r.roles:
                fmt = get_format(self.format)
                s = next((c for c in fmt.candidate_schemes(r.scheme) if c.bits == expert_bits),
                         replace(r.scheme, bits=expert_bits))
                rules.append(replace(r, roles=("routed_expert",), scheme=common(s)))
                others = tuple(x for x in r.roles if x != "routed_expert")
                if not others:
                    continue
                r = replace(r, roles=others)
            rules.append(replace(r, scheme=common(r.scheme)))
        return replace(self, rules=tuple(rules))

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "format": self.format, "source": self.source,
                "rules": [{"role": list(r.roles), "name": r.name,
                           "scheme": r.scheme.to_dict() if r.scheme else "keep"} for r in self.rules]}


def _shown(value) -> str:
    """A YAML value in words, for a type error: `the string 'false'`, `the number 4.0`, `a list`."""
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if value is None:
        return "nothing (null)"
    return {list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _check_types(raw: dict, where: str) -> None:
    """Every common key of a rule has its YAML type and range; ProfileError naming the key otherwise."""
    for key in _BOOL_KEYS:
        if key in raw and not isinstance(raw[key], bool):
            raise ProfileError(f"{where}: `{key}` must be true or false (a YAML boolean, unquoted), "
                               f"got {_shown(raw[key])}")
    for key in _INT_KEYS:
        if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], int)):
            raise ProfileError(f"{where}: `{key}` must be an integer, got {_shown(raw[key])}")
    for key in _STR_KEYS:
        if key in raw and not isinstance(raw[key], str):
            raise ProfileError(f"{where}: `{key}` must be a string, got {_shown(raw[key])}")
    if "bits" in raw and raw["bits"] not in SUPPORTED_BITS:
        raise ProfileError(f"{where}: `bits` must be one of {', '.join(map(str, SUPPORTED_BITS))}, got {raw['bits']}")
    if "group_size" in raw and raw["group_size"] != -1 and raw["group_size"] <= 0:
        raise ProfileError(f"{where}: `group_size` must be a positive number of columns or -1 (per-channel), "
                           f"got {raw['group_size']}")
    if "method" in raw and raw["method"] not in METHODS:
        raise ProfileError(f"{where}: `method` must be one of {', '.join(METHODS)}, got {raw['method']!r}")
    role = raw.get("role")
    if role is not None and not isinstance(role, str):
        if not isinstance(role, list):
            raise ProfileError(f"{where}: `role` must be a role name or a list of them, got {_shown(role)}")
        bad = [r for r in role if not isinstance(r, str)]
        if bad:
            raise ProfileError(f"{where}: `role` must list role names (strings), got {_shown(bad[0])} in the list")


def _parse_rule(raw, where: str, fmt: str) -> Rule:
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: each rule must be a mapping, got {raw!r}")
    allowed = _RULE_KEYS | get_format(fmt).rule_keys
    unknown = set(raw) - allowed
    if unknown:
        key = sorted(unknown)[0]
        owners = [f for f in format_names() if key in get_format(f).rule_keys]
        if owners:
            raise ProfileError(f"{where}: `{key}` needs `format: {owners[0]}` at the top of the profile")
        raise ProfileError(f"{where}: unknown key {key!r}; allowed: {', '.join(sorted(allowed))}")
    _check_types(raw, where)
    roles = raw.get("role") or []
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    for r in roles:
        if r.split(".")[0] not in ALL_KINDS:
            raise ProfileError(f"{where}: unknown role {r!r}; known: {', '.join(ALL_KINDS)}")
    name = raw.get("name")
    if name is not None:
        try:
            re.compile(name)
        except re.error as e:
            raise ProfileError(f"{where}: bad name regex {name!r} ({e})")
    if not roles and name is None:
        raise ProfileError(f"{where}: a rule needs `role` or `name`")
    if raw.get("keep"):
        if "bits" in raw or set(raw) & get_format(fmt).rule_keys:
            raise ProfileError(f"{where}: a rule cannot both keep and set bits")
        return Rule(roles, name, None, raw.get("why", ""))
    raw = get_format(fmt).rule_fields(raw, where)
    if "bits" not in raw:
        raise ProfileError(f"{where}: a rule needs `keep: true` or `bits`")
    try:
        scheme = QuantScheme(bits=int(raw["bits"]), group_size=int(raw.get("group_size", 128)),
                             sym=bool(raw.get("sym", True)), method=str(raw.get("method", "rtn")),
                             desc_act=bool(raw.get("desc_act", False)), scale_bits=raw.get("scale_bits"))
    except (TypeError, ValueError) as e:
        raise ProfileError(f"{where}: {e}")
    return Rule(roles, name, scheme, raw.get("why", ""))


def load_profile(path_or_name: str | Path) -> Profile:
    """A profile file, or the name of a shipped profile (e.g. `ernie45-vl-w4`)."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = PROFILE_DIR / f"{path_or_name}.yaml"
        if not shipped.is_file():
            names = ", ".join(p.stem for p in sorted(PROFILE_DIR.glob("*.yaml")))
            raise ProfileError(f"--profile {path_or_name}: no such file or shipped profile; shipped: {names}")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: invalid YAML ({str(e).splitlines()[0]})")
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile must be a mapping with `family` and `rules`")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ProfileError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    if "family" not in raw or not isinstance(raw.get("rules"), list):
        raise ProfileError(f"{path}: a profile needs `family` and a list of `rules`")
    for key in ("name", "family", "format", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise ProfileError(f"{path}: `{key}` must be a string, got {_shown(raw[key])}")
    fmt = raw.get("format", default_format().name)
    if fmt not in format_names():
        raise ProfileError(f"{path}: format {fmt!r} is not supported (supported: {', '.join(format_names())})")
    rules = tuple(_parse_rule(r, f"{path} rule {i + 1}", fmt) for i, r in enumerate(raw["rules"]))
    return Profile(name=raw.get("name", path.stem), family=raw["family"], format=fmt,
                   description=raw.get("description", ""), rules=rules, source=str(path))


def check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise UsageError(f"--bits {bits}: supported bit widths are {', '.join(map(str, SUPPORTED_BITS))}")
    return bits


def profile_for_bits(family_profile: str, bits: int, fmt: str | None = None) -> Profile:
    """`--bits N`: the family's shipped `-wN` profile (`<profile><format suffix>-wN`, e.g. `-gguf-wN`),
    else its `-w4` profile with expert bits N."""
    check_bits(bits)
    family_profile += get_format(fmt).profile_suffix
    exact = PROFILE_DIR / f"{family_profile}-w{bits}.yaml"
    if exact.is_file():
        return load_profile(exact)
    return load_profile(PROFILE_DIR / f"{family_profile}-w4.yaml").with_overrides(expert_bits=bits)


def resolve_profile(adapter, *, bits: int | None, profile: str | None,
                    group_size: int | None = None, method: str | None = None, fmt: str | None = None) -> Profile:
    """The profile `quantize`/`plan` use: `--profile` (with `--bits` overriding the experts' bits), else
    the family's `-wN` profile for the format; `--format` rewrites its format (the plan checks the
    schemes fit), `--group-size` and `--method` override every rule."""
    asked = get_format(fmt) if fmt is not None else None
    if asked is not None:
        asked.check_adapter(adapter)
    if profile is not None:
        prof = load_profile(profile)
        if bits is not None:
            prof = prof.with_overrides(expert_bits=check_bits(bits))
    else:
        prof = profile_for_bits(adapter.default_profile, 4 if bits is None else bits, fmt)
    if asked is not None and prof.format != asked.name:
        prof = replace(prof, format=asked.name)  # the profile's schemes, written as the asked format (checked by the plan)
    if group_size is not None and group_size != -1 and group_size <= 0:
        raise UsageError(f"--group-size {group_size}: must be a positive number of columns or -1 (per-channel)")
    return prof.with_overrides(group_size=group_size, method=method)
