"""The body sections of a variant's model card that every format shares: what was quantized and kept
per role, calibration, the tradeoff table, runtimes (the format's statements, then the verdicts),
how to reproduce it, and license and attribution. Each takes the `CardContext` and returns lines."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ProfileError
from ..format import format_of_variant
from ..manifest import MANIFEST
from ..profiles import load_profile
from ..roles import ALL_KINDS
from ..scheme import KEEP, QuantScheme, parse_scheme_label
from ..units import human_bytes
from ..version import QUANTKIT_VERSION
from .naming import HUB, expert_scheme, group_text
from .tables import md_table, verdicts_section

if TYPE_CHECKING:  # card.py imports this module
    from .card import CardContext


# -- what the card reads from the variant -------------------------------------------------------

@dataclass
class RoleRow:
    label: str
    tensors: int = 0
    schemes: Counter = field(default_factory=Counter)  # QuantScheme (or an unparsed label) -> tensors
    kept: int = 0
    kept_dtypes: set = field(default_factory=set)
    bytes: int = 0
    fallbacks: int = 0
    types: set = field(default_factory=set)  # the role's stored types, from the format's file_bytes rows


def _role_order(label: str) -> tuple:
    kind, _, modality = label.partition(".")
    return (ALL_KINDS.index(kind) if kind in ALL_KINDS else len(ALL_KINDS), modality)


def role_rows(variant: Path, manifest: dict) -> list[RoleRow]:
    """Per role: tensors and schemes with counts (from quantkit.json), bytes on disk and stored types
    (from the variant's files, through its format's `file_bytes`)."""
    rows: dict[str, RoleRow] = {}
    for entry in (manifest.get("tensors") or {}).values():
        r = rows.setdefault(entry.get("role", "other"), RoleRow(entry.get("role", "other")))
        r.tensors += 1
        label = entry.get("scheme", KEEP)
        if label == KEEP:
            r.kept += 1
        else:
            r.schemes[parse_scheme_label(label) or label] += 1
        if entry.get("fallback"):
            r.fallbacks += 1
    for label, row in format_of_variant(variant).file_bytes(variant)["by_role"].items():
        r = rows.setdefault(label, RoleRow(label))
        r.bytes += row["bytes"]
        r.types.update(row.get("types") or ())
        if not r.schemes:
            r.kept_dtypes.update(row.get("types") or ())
    return sorted(rows.values(), key=lambda r: _role_order(r.label))


# -- sections -----------------------------------------------------------------------------------

def roles_section(ctx: "CardContext") -> list[str]:
    out = ["## What was quantized and what was kept", "",
           "Per role (tensor counts and bytes from this variant's files; schemes from `quantkit.json`):", ""]
    body = []
    for r in ctx.rows:
        schemes = [k for k in r.schemes if isinstance(k, QuantScheme)]
        if r.label == "other":
            body.append([r.label, str(r.tensors), "—", "—", "—", "—", human_bytes(r.bytes)])
            continue
        if not schemes:
            dt = ", ".join(sorted(r.kept_dtypes)) or "source dtype"
            body.append([r.label, str(r.tensors), f"kept ({dt}, bit-identical)", "—", "—", "—", human_bytes(r.bytes)])
            continue
        bits = sorted({k.bits for k in schemes})
        groups = Counter()
        for k in schemes:
            groups[group_text(k)] += r.schemes[k]
        group_txt = ", ".join(f"{g} ×{n}" if len(groups) > 1 else g for g, n in
                              sorted(groups.items(), key=lambda kv: -kv[1]))
        sym = sorted({"symmetric" if k.sym else "asymmetric" for k in schemes})
        methods = sorted({k.method.upper() + (" act-order" if k.desc_act else "") for k in schemes})
        kept = f" ({r.kept} kept)" if r.kept else ""
        stored = f" ({', '.join(sorted(r.types))})" if ctx.facts.storage_types and r.types else ""
        body.append([r.label, str(r.tensors) + kept, "/".join(map(str, bits)) + "-bit" + stored, group_txt,
                     ", ".join(sym), ", ".join(methods), human_bytes(r.bytes)])
    out.append(md_table(["Role", "Tensors", "Bits", "Group size", "Grid", "Method", "On disk"], body))
    kept_roles = [r.label for r in ctx.rows if not any(isinstance(k, QuantScheme) for k in r.schemes)
                  and r.label != "other"]
    out.append("")
    if kept_roles:
        out.append("Kept bit-identical to the base model: " + ", ".join(f"`{k}`" for k in kept_roles) + ".")
    fb = sum(r.fallbacks for r in ctx.rows)
    if fb:
        out.append(f"{fb} tensors use a smaller group than their rule asks, because the rule's group size does not "
                   "divide their input width (listed with the reason under `tensors` in `quantkit.json`).")
    rtn_fb = ctx.manifest.get("fallbacks") or []
    if rtn_fb:
        by_role = Counter(f.get("role", "?") for f in rtn_fb)
        out.append("Quantized with RTN instead of GPTQ because calibration routed no token to them: "
                   + ", ".join(f"{n} {role}" for role, n in sorted(by_role.items())) + " tensors.")
    return out + [""]


def calibration_section(m: dict) -> list[str]:
    out = ["## Calibration", ""]
    cal = m.get("calibration")
    if not cal:
        methods = m.get("method") or []
        if methods == ["rtn"] or (not methods and expert_scheme(m).method == "rtn"):
            out.append("None: round-to-nearest uses no calibration data.")
        else:
            out.append("Not recorded in `quantkit.json`.")
        return out + [""]
    smp = cal.get("samples") or {}
    tok = smp.get("tokens") or {}
    out.append(f"- Sample set: `{Path(str(smp.get('path', '?'))).name}`, sha256 `{smp.get('sha256', '?')}`")
    out.append(f"- {smp.get('samples', '?')} samples, {tok.get('text', '?')} text and {tok.get('vision', '?')} "
               "vision tokens")
    out.append(f"- Expert coverage mode `{cal.get('mode', '?')}`, min tokens {cal.get('min_tokens', '?')}"
               + ("; calibrated on the fly" if cal.get("on_the_fly") else "; from a saved calibration directory")
               + ("; sequential (each layer on the quantized layers before it)" if cal.get("sequential") else ""))
    cov = cal.get("coverage")
    if isinstance(cov, dict) and cov:
        per_mod: dict[str, list[int]] = {}
        for rec in cov.values():
            if isinstance(rec, dict) and "modality" in rec:
                t = per_mod.setdefault(rec["modality"], [0, 0, 0])
                t[0] += int(rec.get("experts", 0))
                t[1] += len(rec.get("under_threshold") or [])
                t[2] += len(rec.get("zero") or [])
        parts = [f"{mod}: {n_under} of {n} experts under {cal.get('min_tokens', '?')} routed tokens"
                 + (f" ({n_zero} with none)" if n_zero else "") for mod, (n, n_under, n_zero) in sorted(per_mod.items())]
        if parts:
            out.append("- Coverage (experts × MoE layers): " + "; ".join(parts)
                       + (" — in `auto` mode those were calibrated on every token of their modality"
                          if cal.get("mode") == "auto" and any(p[1] for p in per_mod.values()) else ""))
    return out + [""]


def allocation_section(m: dict) -> list[str]:
    """`--target-size` / `--vram`: the bits each unit got, in one short table (none without an allocation)."""
    a = m.get("allocation")
    if not isinstance(a, dict):
        return []
    out = ["## Bits per unit (`--target-size` / `--vram`)", "",
           f"Chosen for {a.get('runtime')} units from the calibration's statistics (expected output error, "
           f"{a.get('error_estimate')} estimate), exact under a budget of {a.get('budget_bytes')} weight bytes; "
           f"predicted {a.get('predicted_bytes')} bytes.", "", "| unit | scheme | bytes |", "|---|---|---:|"]
    for u in a.get("units") or []:
        stored = f" ({u['storage']})" if u.get("storage") else ""  # the format's name: GGUF's Q4_K
        out.append(f"| {u.get('unit')} | {u.get('scheme')}{stored} | {u.get('bytes')} |")
    return out + [""]


def tradeoff_section(ctx: "CardContext") -> list[str]:
    out = ["## Size and quality tradeoff", ""]
    if not ctx.report:
        out.append("No tradeoff was measured for this card: run `quantkit profile` on the variant and package it "
                   "again with `--report DIR` to add the table.")
        return out + [""]
    out += [f"From `quantkit profile` ({ctx.report['source']}, sha256 `{ctx.report['sha256'][:16]}…`):", "",
            ctx.report["table"]]
    return out + [""]


def runtime_section(ctx: "CardContext") -> list[str]:
    """The format's statements about its runtimes, then what `quantkit verify` found."""
    return ["## Runtimes", "", *ctx.facts.runtime_lines, *verdicts_section(ctx.verdicts, ctx.facts.unverified_note)]


def reproduce_section(ctx: "CardContext") -> list[str]:
    m = ctx.manifest
    src = m.get("source") or {}
    model = ctx.base_model or str(src.get("id"))
    rev = f" --revision {src['revision']}" if src.get("revision") else ""
    args, note = profile_args(m)
    lines = []
    cal = m.get("calibration") or {}
    if cal and not cal.get("on_the_fly"):
        lines.append(f"quantkit calibrate {model}{rev} --out calib{_calib_args(cal)}")
        args += " --calib calib"
    elif cal.get("on_the_fly"):
        args += _calib_args(cal) + (" --sequential" if cal.get("sequential") else "")
    if ctx.facts.reproduce_lines is not None:  # e.g. a variant converted from another format's
        lines += ctx.facts.reproduce_lines
        note = None
    else:
        lines.append(f"quantkit quantize {model}{rev} {args} --out {ctx.name.full}".replace("  ", " "))
    pkg = f"quantkit package {ctx.name.full}"
    if ctx.base_model and ctx.base_model != src.get("id"):
        pkg += f" --base-model {ctx.base_model}"
    lines.append(pkg + (" --report REPORT_DIR" if ctx.report else ""))
    out = ["## Reproduce", "", f"With quantkit {m.get('quantkit_version', QUANTKIT_VERSION)}:", "", "```bash",
           *lines, "```", ""]
    if note:
        out += [note, ""]
    return out


def _calib_args(cal: dict) -> str:
    smp = cal.get("samples") or {}
    out = ""
    path = str(smp.get("path") or "")
    if path and Path(path).name != "default":
        out += f" --samples {Path(path).name}"
    if cal.get("mode") and cal["mode"] != "auto":
        out += f" --mode {cal['mode']}"
    if cal.get("min_tokens") not in (None, 64):
        out += f" --min-tokens {cal['min_tokens']}"
    return out


def profile_args(m: dict) -> tuple[str, str | None]:
    """The shortest `--profile NAME [--bits] [--group-size] [--method]` that rebuilds the recorded
    profile from a shipped one; else a pointer to the profile recorded in quantkit.json."""
    rec = dict(m.get("profile") or {})
    name = rec.get("name")
    rec.pop("source", None)
    try:
        shipped = load_profile(name)
    except (ProfileError, TypeError):
        return f"--profile {name}.yaml", (f"`{name}` is not a shipped profile: its rules are recorded under `profile` "
                                          f"in `{MANIFEST}`; write them to `{name}.yaml`.")
    rules = [r for r in rec.get("rules", []) if isinstance(r.get("scheme"), dict)]
    schemes = [r["scheme"] for r in rules]
    bits_opts = [None] + sorted({r["scheme"]["bits"] for r in rules if "routed_expert" in r.get("role", [])})
    groups = [None] + sorted({s["group_size"] for s in schemes})
    methods = [None] + sorted({s["method"] for s in schemes})
    best = None
    for b, g, meth in product(bits_opts, groups, methods):
        cand = shipped.with_overrides(expert_bits=b, group_size=g, method=meth).to_dict()
        cand.pop("source", None)
        if cand == rec:
            n = sum(x is not None for x in (b, g, meth))
            if best is None or n < best[0]:
                best = (n, b, g, meth)
    if best is None:
        return f"--profile {name}.yaml", (f"The recorded profile differs from the shipped `{name}`: its rules are "
                                          f"under `profile` in `{MANIFEST}`; write them to `{name}.yaml`.")
    _, b, g, meth = best
    args = f"--profile {name}" + (f" --bits {b}" if b else "") + (f" --group-size {g}" if g else "") + \
        (f" --method {meth}" if meth else "")
    return args, None


def license_section(ctx: "CardContext") -> list[str]:
    out = ["## License and attribution", ""]
    base = f"[{ctx.base_model}]({HUB}/{ctx.base_model})" if ctx.base_model else "the source checkpoint"
    owner = ctx.base_model.split("/")[0] if ctx.base_model else None
    if ctx.license == "unknown":
        out.append(f"The license of {base} could not be read when this card was written; the weights are a "
                   "derivative of it and carry its terms. Read the base model's card before use.")
    else:
        link = ctx.license_extra.get("license_link")
        lic = f"`{ctx.license}`" + (f" ({ctx.license_extra.get('license_name')}, {link})" if link else "")
        out.append(f"The weights are a derivative of {base}{' by ' + owner if owner else ''} and are distributed "
                   f"under the base model's license, {lic}. All credit for the model goes to its authors; "
                   "quantization adds no terms of its own.")
    out.append("")
    out.append(f"quantkit is Apache-2.0 licensed. Made with quantkit {ctx.manifest.get('quantkit_version', QUANTKIT_VERSION)}"
               f" on {ctx.manifest.get('created', '?')}.")
    return out + [""]


__all__ = ["RoleRow", "allocation_section", "calibration_section",
           "license_section", "profile_args", "reproduce_section", "role_rows",
           "roles_section", "runtime_section", "tradeoff_section"]
