"""A variant's model card (README.md): YAML metadata the Hub reads (`base_model`,
`base_model_relation: quantized`, `license`, `library_name`, `pipeline_tag`, `tags`) and a body that
says what was quantized and what was kept, the calibration, the size/quality tradeoff, which runtimes
load it and how, how to reproduce it, and the base model's license and attribution.

The format's part (name suffix, tags, library, the opening sentence, the format line, the runtime
statements) comes from `Format.card` (quantkit/formats/*/card.py); the family's (vision, config
flavour) from its adapter; the sections every format shares are in card_sections.py.

Also here: the card of a repo's `main` in the branch-per-variant layout, which lists the branches.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..adapters import adapter_for
from ..errors import CheckpointError, VariantCorrupt
from ..format import CardFacts, CardInput, format_of_variant
from ..units import human_bytes
from ..version import QUANTKIT_VERSION
from .card_sections import (
    RoleRow,
    allocation_section,
    calibration_section,
    license_section,
    reproduce_section,
    roles_section,
    runtime_section,
    tradeoff_section,
)
from .naming import HUB, HUB_ID, VariantName, expert_scheme, group_text, scheme_text, variant_name
from .tables import md_table

CARD = "README.md"


def read_card_metadata(text_or_path: str | os.PathLike) -> dict:
    """The YAML front matter of a model card (a path or its text); {} when there is none."""
    text = text_or_path
    if isinstance(text_or_path, Path) or (isinstance(text_or_path, str) and "\n" not in text_or_path
                                          and Path(text_or_path).is_file()):
        text = Path(text_or_path).read_text(encoding="utf-8")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", str(text), re.S)
    if not m:
        return {}
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise VariantCorrupt(f"model card: invalid YAML metadata ({str(e).splitlines()[0]})")
    return data if isinstance(data, dict) else {}


def family_facts(config: dict) -> dict:
    """Modalities, config flavour and remote code, through the family's adapter."""
    common = {"model_type": config.get("model_type"), "remote_code": bool(config.get("auto_map"))}
    try:
        a = adapter_for(config)
    except CheckpointError:  # a family quantkit does not know: what config.json says
        return {"vl": "vision_config" in config, "flavour": None, **common}
    return {"vl": "vision" in a.shape.modalities, "flavour": getattr(a, "flavour", None), **common}


@dataclass
class CardContext:
    variant: Path
    manifest: dict
    name: VariantName
    base_model: str | None
    license: str
    license_extra: dict  # license_name / license_link when license is "other"
    rows: list[RoleRow]
    config: dict
    report: dict | None = None
    verdicts: dict | list | None = None
    repo: str | None = None
    revision: str | None = None
    facts: CardFacts = field(init=False)  # the format's part of the card

    def __post_init__(self):
        self.facts = format_facts(self.variant, self.manifest, self.config, name=self.name, base_model=self.base_model,
                                  repo=self.repo, revision=self.revision,
                                  tensor_bytes=sum(r.bytes for r in self.rows))


def format_facts(variant: Path, manifest: dict, config: dict, *, name: VariantName | None = None,
                 base_model: str | None = None, repo: str | None = None, revision: str | None = None,
                 tensor_bytes: int = 0) -> CardFacts:
    """Ask the variant's format for its part of the card."""
    s = expert_scheme(manifest)
    src = manifest.get("source") or {}
    fam = family_facts(config)
    info = CardInput(
        scheme=s, scheme_text=scheme_text(s),
        algorithm="round-to-nearest (RTN)" if s.method == "rtn" else s.method.upper(),
        version=manifest.get("quantkit_version", QUANTKIT_VERSION), name=(name or variant_name(manifest)).full,
        base_link=f"[{base_model}]({HUB}/{base_model})" if base_model else f"`{src.get('id')}`",
        model=base_model or str(src.get("id")), model_revision=f" --revision {src['revision']}" if src.get("revision") else "",
        tensor_bytes=tensor_bytes, repo=repo, revision=revision, vision=fam["vl"], flavour=fam["flavour"],
        model_type=fam["model_type"], remote_code=fam["remote_code"])
    return format_of_variant(variant).card(manifest, info)


def card_metadata(ctx: CardContext) -> dict:
    facts = family_facts(ctx.config)
    s = expert_scheme(ctx.manifest)
    tags = ["moe", "mixture-of-experts", *ctx.facts.tags, f"{s.bits}-bit", "quantkit"]
    if s.method == "rtn":
        tags.append("rtn")
    if facts["vl"]:
        tags.append("vision-language")
    if facts["model_type"]:
        tags.append(str(facts["model_type"]))
    meta: dict = {}
    if ctx.base_model:
        meta["base_model"] = ctx.base_model
        meta["base_model_relation"] = "quantized"
    meta["license"] = ctx.license
    meta.update(ctx.license_extra)
    meta["library_name"] = ctx.facts.library_name
    meta["pipeline_tag"] = "image-text-to-text" if facts["vl"] else "text-generation"
    meta["tags"] = tags
    return meta


def render_card(ctx: CardContext) -> str:
    meta = card_metadata(ctx)
    m = ctx.manifest
    s = expert_scheme(m)
    src = m.get("source") or {}
    out = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# {ctx.name.full}", ""]
    out += [f"{ctx.facts.made_as} It is not an official release of the base model's authors.", ""]
    if ctx.base_model and not HUB_ID.match(str(src.get("id") or "")):
        out += [f"Quantized from a local copy of the base model (`{src.get('id')}`"
                f"{', revision ' + src['revision'] if src.get('revision') else ''}), declared as {ctx.base_model}.", ""]
    elif not ctx.base_model:
        out += [f"The source is a local checkpoint (`{src.get('id')}`) with no Hub id, so this card names no "
                "`base_model` and the Hub will not list it as a quantization of another model.", ""]
    elif src.get("revision"):
        out += [f"Base model revision: `{src['revision']}`.", ""]
    out += [ctx.facts.format_line,
            f"- Profile: `{(m.get('profile') or {}).get('name')}`; routed experts: {scheme_text(s)}.",
            "- Every file's sha256 is in `quantkit.json`; `quantkit verify-files DIR` checks them after a download.",
            ""]
    out += roles_section(ctx)
    out += calibration_section(m)
    out += allocation_section(m)
    out += tradeoff_section(ctx)
    out += runtime_section(ctx)
    out += reproduce_section(ctx)
    out += license_section(ctx)
    return "\n".join(out).rstrip() + "\n"


# -- the card of a repo's main branch in the branch-per-variant layout ------------------------------

def render_index_card(repo: str, meta: dict, variants: list[dict], facts: CardFacts | None = None) -> str:
    """main's README.md when each variant lives on its own branch: the Hub reads main's metadata to
    classify the repo (quantized, base model), and the body lists the branches.

    `variants`: dicts with branch, name, bits, group, sym, method, bytes, commit (`index_entry`).
    `facts`: the card facts of the variant being pushed (`format_facts`): its format's label in the
    title and its serving commands under the download line."""
    keep = {k: meta[k] for k in ("base_model", "base_model_relation", "license", "license_name", "license_link",
                                 "library_name", "pipeline_tag") if k in meta}
    tags = [t for t in meta.get("tags", []) if not re.fullmatch(r"\d+-bit", t)]
    tags += sorted({f"{v['bits']}-bit" for v in variants}, key=lambda t: int(t.split("-")[0]))
    keep["tags"] = tags
    base = meta.get("base_model")
    label = f" {facts.label}" if facts else ""
    title = f"{base.split('/')[1]}{label} variants" if base else f"{repo.split('/')[1]} variants"
    out = ["---", yaml.safe_dump(keep, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    out.append(f"Quantizations of [{base}]({HUB}/{base}) made with quantkit, one per branch; `main` holds only this "
               "card." if base else "Quantized variants made with quantkit, one per branch; `main` holds only this card.")
    out.append("Each branch has its own model card (what was quantized and kept, calibration, runtimes, the command "
               "that reproduces it) and `quantkit.json` with the sha256 of every file.")
    out.append("")
    rows = [[f"`{v['branch']}`", v["name"], f"{v['bits']}-bit", str(v["group"]), "yes" if v["sym"] else "no",
             v["method"].upper(), human_bytes(v["bytes"]) if v.get("bytes") else "?"] for v in variants]
    out.append(md_table(["Branch", "Variant", "Experts", "Group", "Symmetric", "Method", "Size"], rows))
    out += ["", "```bash", f"hf download {repo} --revision BRANCH --local-dir DIR",
            *(facts.index_lines if facts else []), "```", ""]
    if "license" in keep:
        out.append(f"License: `{keep['license']}`, the base model's; the weights are its derivative and all credit "
                   "goes to its authors.")
    return "\n".join(out).rstrip() + "\n"


def index_entry(branch: str, manifest: dict, commit: str | None = None) -> dict:
    s = expert_scheme(manifest)
    pkg = manifest.get("package") or {}
    return {"branch": branch, "name": pkg.get("name") or variant_name(manifest).full, "bits": s.bits,
            "group": group_text(s), "sym": s.sym, "method": s.method,
            "bytes": sum(int(v.get("size", 0)) for v in (manifest.get("files") or {}).values()), "commit": commit}


__all__ = ["CARD", "CardContext", "card_metadata", "family_facts", "format_facts", "index_entry", "read_card_metadata",
           "render_card", "render_index_card"]
