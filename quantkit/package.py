"""Make a variant directory ready to publish: its model card, its name, and its checksums.

`package(PackageOptions(variant=...))`:
  1. verifies every file listed in `quantkit.json` (sha256 and size) and that no unlisted file is
     there (`verify_files`), so a card is never written over a damaged variant;
  2. writes `README.md`, a model card whose YAML metadata the Hub reads (`base_model`,
     `base_model_relation: quantized`, `license`, `library_name`, `pipeline_tag`, `tags`) and whose body
     says what was quantized and what was kept (per role: bits, group size, symmetry, method, bytes),
     the calibration set and its hash, the size/quality tradeoff when a `quantkit profile` report is
     given, which runtimes can load the variant and with what command, the command that reproduces
     it, and the base model's license and attribution;
  3. records the card and the packaging facts in `quantkit.json` (`package`) and updates its
     `files` entry for README.md, so `quantkit verify-files` covers the card too.

Naming convention (used as the repo name, or as the branch in a one-repo-many-branches layout):

    <base>-GPTQ-Int<bits>-g<group>[-asym][-actorder][-rtn]

  <base>   the base model's repo name (`ERNIE-4.5-VL-28B-A3B-PT` for `baidu/ERNIE-4.5-VL-28B-A3B-PT`;
           the directory name for a local source)
  GPTQ     the on-disk format (every variant is written in the GPTQ checkpoint format)
  Int<N>   the routed experts' bits: they are ~90% of an MoE's weights, so they set the size class;
           other roles may have more bits (e.g. the -w4 profiles keep attention at 8): the card says
  g<G>     the routed experts' group size (`ch` when per-channel); narrower layers that fell back to a
           smaller group are listed in the card
  -asym    asymmetric expert grid (e.g. the 2-bit profiles); -actorder: GPTQ act-order
  -rtn     made with round-to-nearest instead of GPTQ (the format is still GPTQ; the name says the
           algorithm was not)

e.g. `ERNIE-4.5-VL-28B-A3B-Thinking-GPTQ-Int4-g128`, `...-GPTQ-Int2-g64-asym`. The part after
`<base>-` is the branch name in the branch layout (`GPTQ-Int4-g128`).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from .errors import QuantkitError
from .roles import ALL_KINDS
from .variant import MANIFEST, read_manifest, sha256_file
from .version import QUANTKIT_VERSION

CARD = "README.md"
HUB = "https://huggingface.co"
_LABEL = re.compile(r"^(?P<method>[a-z]+)-w(?P<bits>\d+)(?:g(?P<group>\d+)|(?P<ch>ch))"
                    r"(?P<asym>-asym)?(?P<act>-actorder)?$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_QUANT_SUFFIXES = (".qweight", ".qzeros", ".scales", ".g_idx")


# -- checksums ----------------------------------------------------------------------------------

@dataclass
class FileProblem:
    path: str
    kind: str  # missing | size | sha256 | unlisted
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}{' (' + self.detail + ')' if self.detail else ''}"


@dataclass
class FilesReport:
    variant: Path
    files: int
    bytes: int
    problems: list[FileProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.variant}: {self.files} files, {_human(self.bytes)}: every sha256 matches {MANIFEST}"
        kinds = Counter(p.kind for p in self.problems)
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        return (f"{self.variant}: does not match {MANIFEST} ({self.files} files listed; {what}; "
                f"first: {self.problems[0]}); re-create the variant or restore the files")


def verify_files(variant: str | os.PathLike) -> FilesReport:
    """Re-hash every file listed in `quantkit.json` and look for files it does not list (besides
    the `.gitattributes` and `.cache/` that a Hub download brings)."""
    variant = Path(variant)
    manifest = read_manifest(variant)
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise QuantkitError(f"{variant}/{MANIFEST}: no `files` checksums; re-create the variant with quantkit")
    report = FilesReport(variant, len(listed), sum(int(v.get("size", 0)) for v in listed.values()))
    for rel, want in sorted(listed.items()):
        p = variant / rel
        if not p.is_file():
            report.problems.append(FileProblem(rel, "missing"))
        elif p.stat().st_size != want.get("size"):
            report.problems.append(FileProblem(rel, "size", f"{p.stat().st_size} bytes, expected {want.get('size')}"))
        elif sha256_file(p) != want.get("sha256"):
            report.problems.append(FileProblem(rel, "sha256", "content changed"))
    for p in sorted(variant.rglob("*")):
        rel = p.relative_to(variant).as_posix()
        if rel == ".gitattributes" or rel.startswith(".cache/"):
            continue  # what a Hub repo, or `hf download --local-dir`, adds around the variant
        if p.is_file() and p.name != MANIFEST and rel not in listed:
            report.problems.append(FileProblem(rel, "unlisted", f"not in {MANIFEST}"))
    return report


def checked_manifest(variant: str | os.PathLike) -> dict:
    """The manifest of a variant whose files all match it; one-line QuantkitError otherwise."""
    report = verify_files(variant)
    if not report.ok:
        raise QuantkitError(report.summary())
    return read_manifest(Path(variant))


# -- naming -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemeInfo:
    bits: int
    group_size: int  # -1 = per-channel
    sym: bool
    method: str
    desc_act: bool = False

    @classmethod
    def parse(cls, label: str) -> "SchemeInfo | None":
        m = _LABEL.match(label)
        if not m:
            return None
        return cls(bits=int(m["bits"]), group_size=-1 if m["ch"] else int(m["group"]), sym=not m["asym"],
                   method=m["method"], desc_act=bool(m["act"]))

    @property
    def group_text(self) -> str:
        return "per-channel" if self.group_size == -1 else str(self.group_size)


@dataclass(frozen=True)
class VariantName:
    base: str
    suffix: str

    @property
    def full(self) -> str:
        return f"{self.base}-{self.suffix}"


def expert_scheme(manifest: dict) -> SchemeInfo:
    """The routed experts' most common scheme (the variant's headline), else the most common one."""
    tensors = manifest.get("tensors") or {}
    experts = Counter(t["scheme"] for t in tensors.values()
                      if t.get("scheme", "keep") != "keep" and str(t.get("role", "")).startswith("routed_expert"))
    pool = experts or Counter(t["scheme"] for t in tensors.values() if t.get("scheme", "keep") != "keep")
    if not pool:
        raise QuantkitError(f"{MANIFEST}: no quantized tensor recorded; not a quantized variant")
    # Most common bits first, then the most common label with those bits (fallback groups are minorities).
    by_bits = Counter()
    for label, n in pool.items():
        s = SchemeInfo.parse(label)
        if s:
            by_bits[s.bits] += n
    if not by_bits:
        raise QuantkitError(f"{MANIFEST}: unrecognised scheme labels ({', '.join(sorted(pool))})")
    bits = by_bits.most_common(1)[0][0]
    label = max((lab for lab in pool if (SchemeInfo.parse(lab) or SchemeInfo(0, 0, True, "")).bits == bits),
                key=lambda lab: (pool[lab], lab))
    return SchemeInfo.parse(label)


def source_base_name(source_id: str) -> str:
    """`org/name` -> `name`; a local directory -> its name (or the repo name of a Hub cache snapshot)."""
    p = Path(str(source_id).rstrip("/"))
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        return p.parent.parent.name.split("--", 2)[-1]
    return p.name


def _sanitize(name: str) -> str:
    """A Hub-valid repo name: letters, digits, `-`, `_`, `.`; no `--`/`..`; at most 96 characters."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name)
    s = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", s)).strip("-.")
    return s or "model"


def variant_name(manifest: dict, base: str | None = None) -> VariantName:
    """The conventional name of a variant (see the module docstring)."""
    s = expert_scheme(manifest)
    suffix = f"GPTQ-Int{s.bits}-{'ch' if s.group_size == -1 else f'g{s.group_size}'}"
    suffix += ("-asym" if not s.sym else "") + ("-actorder" if s.desc_act else "")
    if manifest.get("format") == "gguf":  # GGUF-<expert type>, e.g. GGUF-Q4_0 (the .gguf's own suffix)
        suffix = f"GGUF-{(manifest.get('gguf') or {}).get('expert_type', f'{s.bits}bit')}"
    methods = {SchemeInfo.parse(t["scheme"]).method for t in (manifest.get("tensors") or {}).values()
               if t.get("scheme", "keep") != "keep" and SchemeInfo.parse(t["scheme"])}
    if methods == {"rtn"}:
        suffix += "-rtn"
    base = _sanitize(base or source_base_name((manifest.get("source") or {}).get("id") or "model"))
    room = 96 - len(suffix) - 1
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
        raise QuantkitError(f"--repo/--revision: unknown placeholder {e}; use {{name}}, {{base}} or {{suffix}}")
    if repo is not None and not _HUB_ID.match(repo):
        raise QuantkitError(f"--repo {repo}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", revision) or ".." in revision:
        raise QuantkitError(f"--revision {revision}: a branch name of letters, digits, '-', '_', '.'")
    return repo, revision


# -- what the card reads from the variant -------------------------------------------------------

@dataclass
class RoleRow:
    label: str
    tensors: int = 0
    schemes: Counter = field(default_factory=Counter)  # SchemeInfo -> tensors
    kept: int = 0
    kept_dtypes: set = field(default_factory=set)
    bytes: int = 0
    fallbacks: int = 0
    gguf_types: set = field(default_factory=set)  # GGML types of the role's tensors (GGUF variants)


def _role_order(label: str) -> tuple:
    kind, _, modality = label.partition(".")
    return (ALL_KINDS.index(kind) if kind in ALL_KINDS else len(ALL_KINDS), modality)


def role_rows(variant: Path, manifest: dict) -> list[RoleRow]:
    """Per role: tensors, schemes with counts, kept tensors and their dtypes, bytes on disk."""
    from .checkpoint import INDEX_NAME, SINGLE_NAME, read_safetensors_header

    tensors = manifest.get("tensors") or {}
    rows: dict[str, RoleRow] = {}
    for entry in tensors.values():
        r = rows.setdefault(entry.get("role", "other"), RoleRow(entry.get("role", "other")))
        r.tensors += 1
        label = entry.get("scheme", "keep")
        if label == "keep":
            r.kept += 1
        else:
            r.schemes[SchemeInfo.parse(label) or label] += 1
        if entry.get("fallback"):
            r.fallbacks += 1
    if manifest.get("format") == "gguf":  # bytes by role from the .gguf's tensor table
        from .gguf.memory import file_bytes
        for label, row in file_bytes(variant)["by_role"].items():
            r = rows.setdefault(label, RoleRow(label))
            r.bytes += row["bytes"]
            r.gguf_types.update(row["types"])
            if not r.schemes:
                r.kept_dtypes.update(row["types"])
        return sorted(rows.values(), key=lambda r: _role_order(r.label))
    # Bytes on disk and kept dtypes, from the shard headers (no tensor data is read).
    index = variant / INDEX_NAME
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        ([SINGLE_NAME] if (variant / SINGLE_NAME).is_file() else [])
    for shard in shards:
        for name, meta in read_safetensors_header(variant / shard).items():
            entry = tensors.get(name)
            if entry is None and name.endswith(_QUANT_SUFFIXES):
                entry = tensors.get(name.rsplit(".", 1)[0] + ".weight")
            label = entry.get("role", "other") if entry else "other"
            r = rows.setdefault(label, RoleRow(label))
            r.bytes += meta["data_offsets"][1] - meta["data_offsets"][0]
            if entry is not None and entry.get("scheme") == "keep":
                r.kept_dtypes.add(meta["dtype"])
    return sorted(rows.values(), key=lambda r: _role_order(r.label))


# -- license and base model ---------------------------------------------------------------------

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
        raise QuantkitError(f"model card: invalid YAML metadata ({str(e).splitlines()[0]})")
    return data if isinstance(data, dict) else {}


def _source_card(source: dict) -> dict:
    """The base model's card metadata where it can be read without the network: a local source
    directory's README.md, or the Hub cache's copy of the repo's README.md."""
    sid = str(source.get("id") or "")
    p = Path(sid)
    if p.is_dir():
        return read_card_metadata(p / CARD) if (p / CARD).is_file() else {}
    if _HUB_ID.match(sid):
        try:
            from huggingface_hub import try_to_load_from_cache
            cached = try_to_load_from_cache(sid, CARD, revision=source.get("revision"))
        except Exception:  # noqa: BLE001 - a cache lookup must never stop packaging
            cached = None
        if isinstance(cached, str) and Path(cached).is_file():
            return read_card_metadata(Path(cached))
    return {}


def _base_model(source: dict, explicit: str | None) -> str | None:
    if explicit:
        if not _HUB_ID.match(explicit):
            raise QuantkitError(f"--base-model {explicit}: expected a Hub id ORG/NAME")
        return explicit
    sid = str(source.get("id") or "")
    p = Path(sid)
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        parts = p.parent.parent.name.split("--")
        if len(parts) >= 3:
            return f"{parts[1]}/{'--'.join(parts[2:])}"
    if _HUB_ID.match(sid) and not p.exists():
        return sid
    return None


# -- report and verdicts ------------------------------------------------------------------------

def read_report(report_dir: str | os.PathLike) -> dict:
    """The tradeoff table of a `quantkit profile` report directory: report.md's first table, else
    a table built from report.json's rows. Returns {"table": markdown, "source": file, "sha256": ...}."""
    d = Path(report_dir)
    if not d.is_dir():
        raise QuantkitError(f"--report {d}: not a directory")
    md, js = d / "report.md", d / "report.json"
    if md.is_file():
        table = _first_md_table(md.read_text(encoding="utf-8"))
        if table:
            return {"table": table, "source": "report.md", "sha256": sha256_file(md)}
    if js.is_file():
        try:
            data = json.loads(js.read_text())
        except json.JSONDecodeError as e:
            raise QuantkitError(f"{js}: invalid JSON ({e})")
        table = _json_table(data)
        if table:
            return {"table": table, "source": "report.json", "sha256": sha256_file(js)}
    raise QuantkitError(f"--report {d}: no table in report.md and no rows in report.json "
                        "(expected the output directory of `quantkit profile`)")


def _first_md_table(text: str) -> str | None:
    """The first markdown table of `text`, with the paragraph right after it (its legend), if any."""
    lines = text.splitlines() + [""]
    block: list[str] = []
    for i, line in enumerate(lines):
        if line.strip().startswith("|"):
            block.append(line.rstrip())
            continue
        if len(block) >= 2 and re.match(r"^\s*\|?\s*:?-{3,}", block[1]):
            legend: list[str] = []
            for nxt in lines[i:]:
                if not nxt.strip():
                    if legend:
                        break
                    continue
                if nxt.lstrip().startswith(("#", "|", "```")):
                    break
                legend.append(nxt.rstrip())
            note = " ".join(legend)
            return "\n".join(block) + (f"\n\n{_clip(note, 1500)}" if note else "")
        block = []
    return None


def _json_table(data) -> str | None:
    rows = data if isinstance(data, list) else None
    if isinstance(data, dict):
        for key in ("variants", "rows", "table", "results", "tradeoff"):
            if isinstance(data.get(key), list):
                rows = data[key]
                break
        else:
            lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
            rows = lists[0] if lists else None
    rows = [r for r in (rows or []) if isinstance(r, dict)]
    if not rows:
        return None
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and (v is None or isinstance(v, (str, int, float, bool)))]
    if not cols:
        return None
    return _md_table(cols, [[_cell(r.get(c)) for c in cols] for r in rows])


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def collect_verdicts(variant: Path) -> dict | None:
    """HOOK (runtime verdicts): `quantkit.verify.verify(variant).to_json()` when that function exists.

    `quantkit verify` is written separately; while it is absent this returns None and the card says
    no runtime check was recorded. `package(..., verdicts=...)` (CLI: `--verdicts FILE`, the output
    of `quantkit verify --json`) takes a verdict dict directly instead."""
    try:
        from .verify import verify as run_verify  # type: ignore[attr-defined]
    except ImportError:
        return None
    out = run_verify(variant).to_json()
    return json.loads(out) if isinstance(out, (str, bytes)) else out


def _verdict_rows(verdicts) -> list[tuple[str, str, str]]:
    """(check, verdict, detail) rows. Reads the `quantkit verify --json` form
    ({"integrity": {"ok", "checks"}, "runtimes": {name: {"servable", "failed", "checks"}}}), and
    falls back to a flat {name: verdict} mapping or a list of {name, verdict, reason} dicts."""
    if isinstance(verdicts, dict) and isinstance(verdicts.get("runtimes"), dict):
        rows = []
        integ = verdicts.get("integrity") or {}
        if "ok" in integ:
            bad = [c.get("id", "?") for c in integ.get("checks", []) if c.get("status") == "fail"]
            rows.append(("file integrity", "ok" if integ["ok"] else "FAILED", ", ".join(bad)))
        for name, v in verdicts["runtimes"].items():
            v = v if isinstance(v, dict) else {"servable": v}
            failed = [str(x).splitlines()[0] for x in v.get("failed", [])]
            rows.append((str(name), "servable" if v.get("servable") else "not servable",
                         _clip("; ".join(failed)) if failed else "every check passed"))
        return [tuple(_cell(x) for x in r) for r in rows]
    items = verdicts
    if isinstance(items, dict):
        items = [{"name": k, **(v if isinstance(v, dict) else {"verdict": v})} for k, v in items.items()
                 if k not in ("variant", "quantkit_version", "created")]
    rows = []
    for it in items or []:
        if not isinstance(it, dict):
            continue
        name = it.get("runtime") or it.get("name") or it.get("id") or "?"
        verdict = it.get("verdict", it.get("status", it.get("servable", it.get("ok", "?"))))
        if isinstance(verdict, bool):
            verdict = "pass" if verdict else "fail"
        detail = it.get("reason") or it.get("summary") or it.get("detail") or it.get("message") or ""
        rows.append((str(name), str(verdict), _clip(str(detail).splitlines()[0]) if detail else ""))
    return [tuple(_cell(x) for x in r) for r in rows]


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- the card -----------------------------------------------------------------------------------

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


def _family_facts(config: dict) -> dict:
    """Modalities, config flavour and remote code, through the family's adapter."""
    try:
        from .adapters import adapter_for
        a = adapter_for(config)
        return {"family": a.family, "vl": "vision" in a.shape.modalities, "flavour": getattr(a, "flavour", None),
                "model_type": config.get("model_type"), "remote_code": bool(config.get("auto_map"))}
    except QuantkitError:
        return {"family": None, "vl": "vision_config" in config, "flavour": None,
                "model_type": config.get("model_type"), "remote_code": bool(config.get("auto_map"))}


def card_metadata(ctx: CardContext) -> dict:
    facts = _family_facts(ctx.config)
    s = expert_scheme(ctx.manifest)
    gguf = ctx.manifest.get("format") == "gguf"
    tags = ["moe", "mixture-of-experts", "gguf" if gguf else "gptq", f"{s.bits}-bit", "quantkit"]
    if gguf:
        tags.insert(3, "llama.cpp")
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
    meta["library_name"] = "gguf" if gguf else "transformers"
    meta["pipeline_tag"] = "image-text-to-text" if facts["vl"] else "text-generation"
    meta["tags"] = tags
    return meta


def render_card(ctx: CardContext) -> str:
    meta = card_metadata(ctx)
    facts = _family_facts(ctx.config)
    m = ctx.manifest
    s = expert_scheme(m)
    src = m.get("source") or {}
    base_link = f"[{ctx.base_model}]({HUB}/{ctx.base_model})" if ctx.base_model else f"`{src.get('id')}`"
    total = sum(r.bytes for r in ctx.rows)
    out = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# {ctx.name.full}", ""]
    made = (f"A {s.bits}-bit (routed experts) quantization of {base_link}, made with "
            f"quantkit {m.get('quantkit_version', QUANTKIT_VERSION)} by "
            f"{'round-to-nearest (RTN)' if s.method == 'rtn' else 'GPTQ'} and written in the GPTQ checkpoint format "
            f"(`quant_method: gptq`). It is not an official release of the base model's authors.")
    gguf = m.get("gguf") if m.get("format") == "gguf" else None
    if gguf:
        made = (f"A {s.bits}-bit (routed experts, `{gguf.get('expert_type')}`) quantization of {base_link} for "
                f"llama.cpp, made with quantkit {m.get('quantkit_version', QUANTKIT_VERSION)} by "
                f"{'round-to-nearest (RTN)' if s.method == 'rtn' else 'GPTQ'} and written as one GGUF file "
                f"(architecture `{gguf.get('arch')}`): the codes the quantizer chose are the GGML blocks llama.cpp "
                "multiplies, without requantization. It is not an official release of the base model's authors.")
    out += [made, ""]
    if ctx.base_model and not _HUB_ID.match(str(src.get("id") or "")):
        out += [f"Quantized from a local copy of the base model (`{src.get('id')}`"
                f"{', revision ' + src['revision'] if src.get('revision') else ''}), declared as {ctx.base_model}.", ""]
    elif not ctx.base_model:
        out += [f"The source is a local checkpoint (`{src.get('id')}`) with no Hub id, so this card names no "
                "`base_model` and the Hub will not list it as a quantization of another model.", ""]
    elif src.get("revision"):
        out += [f"Base model revision: `{src['revision']}`.", ""]
    fmt_line = (f"- Format: GPTQ (`checkpoint_format: gptq`), {_human(total)} of tensors in safetensors shards; `config.json` carries `quantization_config` with "
                "`dynamic` rules for modules that differ from the base scheme or stay unquantized.")
    if gguf:
        fmt_line = (f"- Format: GGUF, one file `{gguf.get('file')}` ({_human(gguf.get('file_bytes') or total)}; "
                    f"{_human(total)} of tensors), GGML type per role below; the source's `config.json` and tokenizer "
                    "files ride along for transformers-side evaluation.")
    out += [fmt_line,
            f"- Profile: `{(m.get('profile') or {}).get('name')}`; routed experts: {_scheme_text(s)}.",
            f"- Every file's sha256 is in `{MANIFEST}`; `quantkit verify-files DIR` checks them after a download.",
            ""]
    out += _roles_section(ctx)
    out += _calibration_section(m)
    out += _tradeoff_section(ctx)
    out += _runtime_section(ctx, s, facts)
    out += _reproduce_section(ctx)
    out += _license_section(ctx)
    return "\n".join(out).rstrip() + "\n"


def _scheme_text(s: SchemeInfo) -> str:
    return (f"{s.bits}-bit, group size {s.group_text}, {'symmetric' if s.sym else 'asymmetric'}, "
            f"{s.method.upper()}{', act-order' if s.desc_act else ''}")


def _roles_section(ctx: CardContext) -> list[str]:
    out = ["## What was quantized and what was kept", "",
           "Per role (tensor counts and bytes from this variant's files; schemes from `quantkit.json`):", ""]
    body = []
    for r in ctx.rows:
        schemes = [k for k in r.schemes if isinstance(k, SchemeInfo)]
        if r.label == "other":
            body.append([r.label, str(r.tensors), "—", "—", "—", "—", _human(r.bytes)])
            continue
        if not schemes:
            dt = ", ".join(sorted(r.kept_dtypes)) or "source dtype"
            body.append([r.label, str(r.tensors), f"kept ({dt}, bit-identical)", "—", "—", "—", _human(r.bytes)])
            continue
        bits = sorted({k.bits for k in schemes})
        groups = Counter()
        for k in schemes:
            groups[k.group_text] += r.schemes[k]
        group_txt = ", ".join(f"{g} ×{n}" if len(groups) > 1 else g for g, n in
                              sorted(groups.items(), key=lambda kv: -kv[1]))
        sym = sorted({"symmetric" if k.sym else "asymmetric" for k in schemes})
        methods = sorted({k.method.upper() + (" act-order" if k.desc_act else "") for k in schemes})
        kept = f" ({r.kept} kept)" if r.kept else ""
        bits_txt = "/".join(map(str, bits)) + "-bit" + (f" ({', '.join(sorted(r.gguf_types))})" if r.gguf_types else "")
        body.append([r.label, str(r.tensors) + kept, bits_txt, group_txt, ", ".join(sym),
                     ", ".join(methods), _human(r.bytes)])
    out.append(_md_table(["Role", "Tensors", "Bits", "Group size", "Grid", "Method", "On disk"], body))
    kept_roles = [r.label for r in ctx.rows if not any(isinstance(k, SchemeInfo) for k in r.schemes)
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


def _calibration_section(m: dict) -> list[str]:
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


def _tradeoff_section(ctx: CardContext) -> list[str]:
    out = ["## Size and quality tradeoff", ""]
    if not ctx.report:
        out.append("No tradeoff was measured for this card: run `quantkit profile` on the variant and package it "
                   "again with `--report DIR` to add the table.")
        return out + [""]
    out += [f"From `quantkit profile` ({ctx.report['source']}, sha256 `{ctx.report['sha256'][:16]}…`):", "",
            ctx.report["table"]]
    return out + [""]


def _runtime_section(ctx: CardContext, s: SchemeInfo, facts: dict) -> list[str]:
    if ctx.manifest.get("format") == "gguf":
        return _gguf_runtime_section(ctx)
    out = ["## Runtimes", ""]
    where = ctx.repo or "ORG/NAME"
    rev = f" --revision {ctx.revision}" if ctx.revision and ctx.revision != "main" else ""
    remote = " --trust-remote-code" if facts["remote_code"] else ""
    if ctx.repo is None:
        out.append("`ORG/NAME` below stands for the repository this variant is published in.")
        out.append("")
    vllm_ok = s.bits in (4, 8) and s.sym
    native_vl = facts["family"] == "ernie45_vl" and facts["flavour"] == "native"
    if vllm_ok and native_vl:
        out.append(f"**vLLM: not with this config.** The experts ({_scheme_text(s)}) are a scheme vLLM's GPTQ MoE "
                   f"kernels take (4 or 8 bits, symmetric), but this variant keeps its source's transformers-native "
                   f"config flavour (`model_type: {facts['model_type']}`), and vLLM's ERNIE-4.5-VL model code reads "
                   "only the remote-code flavour (`ernie4_5_moe_vl`: flat fields, `auto_map` and the repo's `*.py` "
                   "files): it fails on this one at `hf_config.spatial_conv_size`. For vLLM, quantize a base that "
                   "has the remote-code config (e.g. the `-Thinking` repo) and serve that variant with "
                   "`vllm serve REPO --trust-remote-code`.")
    elif vllm_ok:
        out.append(f"**vLLM** serves GPTQ MoE experts at 4 and 8 bits with a symmetric grid (gptq_marlin / "
                   f"moe_wna16 kernels), which is what this variant has ({_scheme_text(s)}):")
        out += ["", "```bash", f"vllm serve {where}{rev}{remote}", "```", ""]
        if facts["family"] == "ernie45_vl":
            out.append("The remote-code config flavour, `auto_map` and the `*.py` files of the base are kept, as "
                       "vLLM's ERNIE-4.5-VL code requires (hence `--trust-remote-code`).")
            out.append("")
        out.append("vLLM needs a GPU for these kernels (its CPU build runs GPTQ MoE only on AMX or ARM CPUs).")
    else:
        why = f"{s.bits}-bit" if s.bits not in (4, 8) else "asymmetric"
        out.append(f"**vLLM cannot serve this variant.** Its experts are {_scheme_text(s)}, and vLLM has no "
                   f"{why} GPTQ MoE kernel: its MoE paths take 4- or 8-bit symmetric experts only. Use a 4- or "
                   "8-bit variant for vLLM.")
        out.append("")
        out.append("Runtimes that could load it, none of them run by quantkit on this variant:")
        out.append(f"- **GPTQModel** reads {s.bits}-bit GPTQ checkpoints with per-module `dynamic` rules; whether "
                   "its kernels cover this model's MoE layers is untested.")
        if facts["vl"]:
            out.append("- **llama.cpp** (after conversion to GGUF, e.g. Q2_K experts): not for this model — "
                       "llama.cpp has the text-only ERNIE-4.5 MoE architecture but no ERNIE-4.5-VL one.")
        else:
            out.append("- **llama.cpp** after conversion to GGUF (architecture `ernie4_5-moe`; 2-bit experts as "
                       "Q2_K). The conversion is a separate step, not part of this repository.")
    out.append("")
    out.append("**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` returns the transformers model "
               "with every quantized weight unpacked from these files (slow; memory of the unpacked model).")
    out.append("")
    rows = _verdict_rows(ctx.verdicts) if ctx.verdicts is not None else []
    if rows:
        out += ["Checked by `quantkit verify` on this variant:", "",
                _md_table(["Check", "Verdict", "Detail"], [list(r) for r in rows]), ""]
    else:
        out.append("No runtime check is recorded for this card (`quantkit verify` was not run); the statements "
                   "above come from the runtimes' documented kernels, not from a run of this variant.")
        out.append("")
    return out


def _gguf_runtime_section(ctx: CardContext) -> list[str]:
    g = ctx.manifest.get("gguf") or {}
    fname = g.get("file", "MODEL.gguf")
    where = ctx.repo or "ORG/NAME"
    rev = f" --revision {ctx.revision}" if ctx.revision and ctx.revision != "main" else ""
    out = ["## Runtimes", "",
           f"**llama.cpp** (any CPU; architecture `{g.get('arch', 'ernie4_5-moe')}`) serves this file as it is:", "",
           "```bash", f"hf download {where}{rev} {fname} --local-dir .", f"llama-server -m {fname}", "```", "",
           f"or `llama-cli -m {fname}`; the chat template, special tokens and end-of-turn token are in the file. "
           "Routers, router bias and norms are F32, as llama.cpp reads them.", "",
           "**transformers / quantkit** (evaluation on CPU): `quantkit.load(DIR)` decodes the .gguf's blocks to "
           "the weights llama.cpp computes with and returns the transformers model.", "",
           "**vLLM** does not serve this file; use a GPTQ variant of the same model for vLLM (GPU).", ""]
    rows = _verdict_rows(ctx.verdicts) if ctx.verdicts is not None else []
    if rows:
        out += ["Checked by `quantkit verify` on this variant:", "",
                _md_table(["Check", "Verdict", "Detail"], [list(r) for r in rows]), ""]
    else:
        out += ["No runtime check is recorded for this card (`quantkit verify` was not run).", ""]
    return out


def _reproduce_section(ctx: CardContext) -> list[str]:
    m = ctx.manifest
    src = m.get("source") or {}
    model = ctx.base_model or str(src.get("id"))
    rev = f" --revision {src['revision']}" if src.get("revision") else ""
    args, note = _profile_args(m)
    lines = []
    cal = m.get("calibration") or {}
    if cal and not cal.get("on_the_fly"):
        lines.append(f"quantkit calibrate {model}{rev} --out calib{_calib_args(cal)}")
        args += " --calib calib"
    elif cal.get("on_the_fly"):
        args += _calib_args(cal) + (" --sequential" if cal.get("sequential") else "")
    exported = m.get("exported_from")
    if exported:  # a GGUF made from a GPTQ variant: that variant's quantize, then export-gguf
        lines.append(f"quantkit quantize {model}{rev} --profile {exported.get('profile')} --out GPTQ-VARIANT")
        lines.append(f"quantkit export-gguf GPTQ-VARIANT --out {ctx.name.full}")
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


def _profile_args(m: dict) -> tuple[str, str | None]:
    """The shortest `--profile NAME [--bits] [--group-size] [--method]` that rebuilds the recorded
    profile from a shipped one; else a pointer to the profile recorded in quantkit.json."""
    rec = dict(m.get("profile") or {})
    name = rec.get("name")
    rec.pop("source", None)
    try:
        from itertools import product

        from .profiles import load_profile
        shipped = load_profile(name)
    except (QuantkitError, TypeError):
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


def _license_section(ctx: CardContext) -> list[str]:
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


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


# -- package ------------------------------------------------------------------------------------

@dataclass
class PackageOptions:
    variant: Path
    report: Path | None = None  # a `quantkit profile` output directory
    base_model: str | None = None  # Hub id of the base when the source was a local directory
    license: str | None = None  # overrides the license read from the base model's card
    name: str | None = None  # overrides the conventional <base> part of the name
    repo: str | None = None  # the repo the card's commands point at (placeholders as in push)
    revision: str | None = None  # the branch the card's commands point at
    verdicts: dict | list | Path | None = None  # a verify report (dict or JSON file); None = the hook
    run_verify: bool = True  # call the `collect_verdicts` hook when no verdicts are given


@dataclass
class PackageResult:
    variant: Path
    name: VariantName
    card: Path
    files: int
    bytes: int
    metadata: dict
    warnings: list[str]


def package(opts: PackageOptions, log: Callable[[str], None] = lambda m: None) -> PackageResult:
    variant = Path(opts.variant)
    manifest = checked_manifest(variant)
    src = manifest.get("source") or {}
    src_card = _source_card(src)
    base_model = _base_model(src, opts.base_model)
    warnings = []
    if base_model is None:
        warnings.append(f"the source `{src.get('id')}` is a local directory: pass --base-model ORG/NAME so the "
                        "Hub lists the variant as a quantization of its base")
    lic = opts.license or src_card.get("license") or "unknown"
    extra = {k: src_card[k] for k in ("license_name", "license_link") if k in src_card and not opts.license}
    if lic == "unknown":
        warnings.append("the base model's license could not be read (no local card): pass --license ID")
    name = variant_name(manifest, base=opts.name or (base_model.split("/")[1] if base_model else None))
    repo, revision = resolve_target(opts.repo, opts.revision, name) if opts.repo or opts.revision else (None, None)
    verdicts = opts.verdicts
    if isinstance(verdicts, (str, Path)):
        try:
            verdicts = json.loads(Path(verdicts).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise QuantkitError(f"--verdicts {opts.verdicts}: not a readable JSON file ({e})")
    elif verdicts is None and opts.run_verify:
        verdicts = collect_verdicts(variant)
    report = read_report(opts.report) if opts.report else None
    try:
        config = json.loads((variant / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise QuantkitError(f"{variant}/config.json: unreadable ({e})")
    ctx = CardContext(variant=variant, manifest=manifest, name=name, base_model=base_model, license=lic,
                      license_extra=extra, rows=role_rows(variant, manifest), config=config, report=report,
                      verdicts=verdicts, repo=repo, revision=revision)
    text = render_card(ctx)
    meta = read_card_metadata(text)
    _atomic_write(variant / CARD, text.encode("utf-8"))
    manifest["files"] = {**manifest["files"],
                         CARD: {"sha256": sha256_file(variant / CARD), "size": (variant / CARD).stat().st_size}}
    manifest["files"] = dict(sorted(manifest["files"].items()))
    manifest["package"] = {"name": name.full, "base": name.base, "suffix": name.suffix, "card": CARD,
                           "base_model": base_model, "license": lic, "repo": repo, "revision": revision,
                           "report": {k: v for k, v in report.items() if k != "table"} if report else None,
                           "verdicts": verdicts is not None, "quantkit_version": QUANTKIT_VERSION,
                           "packaged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(variant / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    for w in warnings:
        log(f"warning: {w}")
    files = manifest["files"]
    return PackageResult(variant, name, variant / CARD, len(files) + 1,
                         sum(v["size"] for v in files.values()) + (variant / MANIFEST).stat().st_size, meta, warnings)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def packaged_card(variant: Path, manifest: dict) -> dict:
    """The card's metadata of a packaged variant; one-line error when there is no current card."""
    card = variant / CARD
    if not (manifest.get("package") and CARD in (manifest.get("files") or {}) and card.is_file()):
        raise QuantkitError(f"{variant}: no model card; run `quantkit package {variant}` first")
    meta = read_card_metadata(card)
    if not meta:
        raise QuantkitError(f"{card}: no YAML metadata; run `quantkit package {variant}` again")
    return meta


# -- the card of a repo's main branch in the branch-per-variant layout ------------------------------

def render_index_card(repo: str, meta: dict, variants: list[dict]) -> str:
    """main's README.md when each variant lives on its own branch: the Hub reads main's metadata to
    classify the repo (quantized, base model), and the body lists the branches.

    `variants`: dicts with branch, name, bits, group, sym, method, bytes, commit."""
    keep = {k: meta[k] for k in ("base_model", "base_model_relation", "license", "license_name", "license_link",
                                 "library_name", "pipeline_tag") if k in meta}
    tags = [t for t in meta.get("tags", []) if not re.fullmatch(r"\d+-bit", t)]
    tags += sorted({f"{v['bits']}-bit" for v in variants}, key=lambda t: int(t.split("-")[0]))
    keep["tags"] = tags
    base = meta.get("base_model")
    title = f"{base.split('/')[1]} GPTQ variants" if base else f"{repo.split('/')[1]} variants"
    out = ["---", yaml.safe_dump(keep, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    out.append(f"Quantizations of [{base}]({HUB}/{base}) made with quantkit, one per branch; `main` holds only this "
               "card." if base else "Quantized variants made with quantkit, one per branch; `main` holds only this card.")
    out.append("Each branch has its own model card (what was quantized and kept, calibration, runtimes, the command "
               "that reproduces it) and `quantkit.json` with the sha256 of every file.")
    out.append("")
    rows = [[f"`{v['branch']}`", v["name"], f"{v['bits']}-bit", str(v["group"]), "yes" if v["sym"] else "no",
             v["method"].upper(), _human(v["bytes"]) if v.get("bytes") else "?"] for v in variants]
    out.append(_md_table(["Branch", "Variant", "Experts", "Group", "Symmetric", "Method", "Size"], rows))
    out += ["", "```bash", f"hf download {repo} --revision BRANCH --local-dir DIR",
            f"vllm serve {repo} --revision BRANCH --trust-remote-code   # 4- and 8-bit variants only", "```", ""]
    if "license" in keep:
        out.append(f"License: `{keep['license']}`, the base model's; the weights are its derivative and all credit "
                   "goes to its authors.")
    return "\n".join(out).rstrip() + "\n"


def index_entry(branch: str, manifest: dict, commit: str | None = None) -> dict:
    s = expert_scheme(manifest)
    pkg = manifest.get("package") or {}
    return {"branch": branch, "name": pkg.get("name") or variant_name(manifest).full, "bits": s.bits,
            "group": s.group_text, "sym": s.sym, "method": s.method,
            "bytes": sum(int(v.get("size", 0)) for v in (manifest.get("files") or {}).values()), "commit": commit}


__all__ = ["CARD", "FilesReport", "PackageOptions", "PackageResult", "VariantName", "checked_manifest",
           "collect_verdicts", "expert_scheme", "index_entry", "package", "packaged_card", "read_card_metadata",
           "read_report", "render_card", "render_index_card", "resolve_target", "variant_name", "verify_files"]
