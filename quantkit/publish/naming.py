"""What a variant is called: its name, the repo and branch it goes to, and its headline scheme.

Naming convention (used as the repo name, or as the branch in a one-repo-many-branches layout):

    <base>-<format suffix>[-rtn]

  <base>    the base model's repo name (`ERNIE-4.5-VL-28B-A3B-PT` for `baidu/ERNIE-4.5-VL-28B-A3B-PT`;
            the directory name for a local source)
  suffix    the variant's format writes it from the routed experts' scheme (`Format.card`, in
            quantkit/formats/*/card.py): the experts are ~90% of an MoE's weights, so they set the
            size class; other roles may have more bits (e.g. the -w4 profiles keep attention at 8):
            the card says. E.g. `...-Int4-g128`, `...-Int2-g64-asym` (bits, group or `ch`, grid,
            act-order), or the file type of a one-file format (`...-Q4_0`)
  -rtn      made with round-to-nearest instead of a calibrated solver (the format is unchanged; the
            name says the algorithm was RTN)

The part after `<base>-` is the branch name in the branch layout.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, VariantCorrupt
from ..format import CardInput, format_of_manifest
from ..manifest import MANIFEST
from ..scheme import KEEP, QuantScheme, parse_scheme_label

HUB = "https://huggingface.co"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
MAX_NAME = 96  # the Hub's limit on a repo name


@dataclass(frozen=True)
class VariantName:
    base: str
    suffix: str

    @property
    def full(self) -> str:
        return f"{self.base}-{self.suffix}"


def group_text(s: QuantScheme) -> str:
    """A scheme's group size in words: `128`, or `per-channel`."""
    return "per-channel" if s.group_size == -1 else str(s.group_size)


def scheme_text(s: QuantScheme) -> str:
    """`4-bit, group size 128, symmetric, RTN` (`, act-order` when it has it)."""
    return (f"{s.bits}-bit, group size {group_text(s)}, {'symmetric' if s.sym else 'asymmetric'}, "
            f"{s.method.upper()}{', act-order' if s.desc_act else ''}")


def _quantized_labels(manifest: dict) -> list[tuple[str, str]]:
    """(role, scheme label) of every quantized tensor the manifest records."""
    return [(str(t.get("role", "")), t["scheme"]) for t in (manifest.get("tensors") or {}).values()
            if t.get("scheme", KEEP) != KEEP]


def expert_scheme(manifest: dict) -> QuantScheme:
    """The routed experts' most common scheme (the variant's headline), else the most common one."""
    labels = _quantized_labels(manifest)
    experts = Counter(label for role, label in labels if role.startswith("routed_expert"))
    pool = experts or Counter(label for _, label in labels)
    if not pool:
        raise VariantCorrupt(f"{MANIFEST}: no quantized tensor recorded; not a quantized variant")
    # Most common bits first, then the most common label with those bits (fallback groups are minorities).
    parsed = {label: parse_scheme_label(label) for label in pool}
    by_bits: Counter = Counter()
    for label, n in pool.items():
        if parsed[label]:
            by_bits[parsed[label].bits] += n
    if not by_bits:
        raise VariantCorrupt(f"{MANIFEST}: unrecognised scheme labels ({', '.join(sorted(pool))})")
    bits = by_bits.most_common(1)[0][0]
    label = max((lab for lab in pool if parsed[lab] and parsed[lab].bits == bits), key=lambda lab: (pool[lab], lab))
    return parsed[label]


def source_base_name(source_id: str) -> str:
    """`org/name` -> `name`; a local directory -> its name (or the repo name of a Hub cache snapshot)."""
    p = Path(str(source_id).rstrip("/"))
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        return p.parent.parent.name.split("--", 2)[-1]
    return p.name


def sanitize(name: str) -> str:
    """A Hub-valid repo name: letters, digits, `-`, `_`, `.`; no `--`/`..`; at most 96 characters."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    s = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", s)).strip("-.")
    return s or "model"


def variant_name(manifest: dict, base: str | None = None) -> VariantName:
    """The conventional name of a variant (see the module docstring)."""
    suffix = format_of_manifest(manifest).card(manifest, CardInput(scheme=expert_scheme(manifest))).name_suffix
    methods = {s.method for s in map(parse_scheme_label, (label for _, label in _quantized_labels(manifest))) if s}
    if methods == {"rtn"}:
        suffix += "-rtn"
    base = sanitize(base or source_base_name((manifest.get("source") or {}).get("id") or "model"))
    room = MAX_NAME - len(suffix) - 1
    return VariantName(base[:room].rstrip("-."), suffix)


def resolve_target(repo: str | None, revision: str | None, name: VariantName) -> tuple[str | None, str]:
    """Expand `{name}`, `{base}`, `{suffix}` in a repo id and branch; `--revision auto` = the suffix."""
    fields = {"name": name.full, "base": name.base, "suffix": name.suffix}
    if revision in (None, ""):
        revision = "main"
    elif revision == "auto":
        revision = name.suffix
    try:
        repo = repo.format(**fields) if repo else repo
        revision = revision.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError(f"--repo/--revision: unknown placeholder {e}; use {{name}}, {{base}} or {{suffix}}")
    if repo is not None and not HUB_ID.match(repo):
        raise UsageError(f"--repo {repo}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", revision) or ".." in revision:
        raise UsageError(f"--revision {revision}: a branch name of letters, digits, '-', '_', '.'")
    return repo, revision


__all__ = ["HUB", "HUB_ID", "VariantName", "expert_scheme", "group_text", "resolve_target",
           "sanitize", "scheme_text", "source_base_name", "variant_name"]
