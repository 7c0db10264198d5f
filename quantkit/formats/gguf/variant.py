"""A GGUF variant directory: `<name>-<type>.gguf`, the source's side files (config.json unchanged,
tokenizer, chat template, generation config) and `quantkit.json` with `format: gguf`, every
tensor's scheme and GGML type, and the sha256 of every file, written into a temporary directory and
renamed into place (`atomic_output_dir`), so `package`, `verify-files`, `verify` and `push` treat it
as they treat a GPTQ variant.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import Checkpoint
from ...errors import QuantkitError, VariantCorrupt
from ...manifest import read_manifest, write_manifest
from ...format import Produce
from ...outdir import output_dir
from ...plan import Plan
from ...runstate import RunProgress
from ...variant_dir import copy_side_files, manifest_record
from .projector import ProjectorFile, image_stats
from .writer import GGUFFile, _pad, check_architecture, check_tokenizer, expert_type, gguf_layout, projector_sources

FORMAT_NAME = "gguf"


def base_name(source: str) -> str:
    p = Path(str(source).rstrip("/"))
    if p.parent.name == "snapshots" and p.parent.parent.name.startswith("models--"):
        name = p.parent.parent.name.split("--", 2)[-1]
    else:
        name = p.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def check_source(ckpt: Checkpoint, adapter) -> None:
    """Everything that refuses a GGUF before any work: architecture and tokenizer."""
    check_architecture(adapter, ckpt)
    check_tokenizer(ckpt.path, adapter.gguf_vocab)
    if adapter.gguf_projector() is not None:
        image_stats(ckpt.path)  # the projector file records the processor's normalisation


def gguf_file(variant: str | Path) -> Path:
    """The .gguf of a GGUF variant directory (its manifest names it)."""
    variant = Path(variant)
    m = read_manifest(variant)
    if m.get("format") != FORMAT_NAME:
        raise VariantCorrupt(f"{variant}: format {m.get('format')!r} in quantkit.json; not a GGUF variant")
    name = (m.get("gguf") or {}).get("file")
    if not name or not (variant / name).is_file():
        raise VariantCorrupt(f"{variant}: the GGUF file {name!r} named in quantkit.json is missing")
    return variant / name


def projector_file(directory: Path, ckpt: Checkpoint, adapter, plan: Plan, name: str) -> ProjectorFile | None:
    """The family's vision projector file (llama.cpp's mmproj-*.gguf) for this plan, or None."""
    if adapter.gguf_projector() is None:
        return None
    types = [e.storage for e in plan.entries if e.name in projector_sources(adapter) and len(e.shape) > 1]
    kind = max(set(types), key=types.count) if types else "F32"
    return ProjectorFile(directory / f"mmproj-{name}-{kind}.gguf", ckpt.path, adapter, plan, name)


def _router(f: GGUFFile, proj: ProjectorFile | None):
    """The producer's `add`: vision tensors to the projector file, the rest to the model's .gguf."""
    if proj is None:
        return f.add
    beside = proj.sources

    def add(group: dict) -> None:
        rest = {}
        for source, value in group.items():
            if source in beside:
                proj.add(source, value)
            else:
                rest[source] = value
        if rest:
            f.add(rest)
    return add


def is_gguf_variant(variant: str | Path) -> bool:
    p = Path(variant) / "quantkit.json"
    try:
        return p.is_file() and json.loads(p.read_text()).get("format") == FORMAT_NAME
    except (OSError, json.JSONDecodeError):
        return False


def write_gguf_variant(
    ckpt: Checkpoint,
    plan: Plan,
    produce: Produce,
    out: Path,
    *,
    overwrite: bool = False,
    extra: dict | None = None,
    source_record: dict | None = None,
    name: str | None = None,
    resume: bool = False,
    run: dict | None = None,
    **_ignored,
) -> Path:
    """`produce(add, progress)` calls `add` with {source tensor name: tensor or BlockWeight}, in any
    grouping. `source_record` / `name` override the manifest's source and the file's base name
    (export-gguf, whose checkpoint is a GPTQ variant of that source). The .gguf is written in one
    pass (header first), so a GGUF run keeps no checkpoints: `resume` starts it over."""
    out = Path(out)
    config = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
    adapter = adapter_for(config)
    check_source(ckpt, adapter)
    layout = gguf_layout(plan, adapter)  # fail early if a tensor has no place in the file
    name = base_name(name or ckpt.source)
    fname = f"{name}-{expert_type(plan)}.gguf"
    started = time.time()
    with output_dir(out, overwrite=overwrite, resume=resume, run=run) as rundir:
        tmp = rundir.result
        f = GGUFFile(tmp / fname, ckpt.path, config, adapter, plan, name)
        proj = projector_file(tmp, ckpt, adapter, plan, name)  # the vision tower, beside the model (mmproj)
        try:
            produced = produce(_router(f, proj), RunProgress(None)) or {}
        except BaseException:
            f.abort()
            raise
        size = f.close()
        predicted = _pad(f.header_bytes) + sum(_pad(t.nbytes) for t in layout)
        data = sum(t.nbytes for t in layout) + (proj.tensor_bytes if proj else 0)
        if size != predicted or data != plan.predicted_bytes:
            raise QuantkitError(f"internal: wrote a {size}-byte GGUF ({data} tensor bytes), the plan predicted {predicted} "
                                f"({plan.predicted_bytes}); please report this")
        copy_side_files(ckpt, tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        manifest = manifest_record(ckpt, plan, time.time() - started, {**(extra or {}), **produced})
        if source_record is not None:
            manifest["source"] = {**manifest["source"], **source_record}
        manifest["gguf"] = {"file": fname, "arch": adapter.gguf_arch, "file_bytes": size, "predicted_file_bytes": predicted,
                            "header_bytes": f.header_bytes, "tensors": len(layout),
                            "expert_type": expert_type(plan),
                            "serve": f"llama-server -m {fname}"}
        by_source = {m: t.name for t in layout for m in t.members}
        if proj is not None:
            proj_size = proj.close()
            manifest["gguf"]["mmproj"] = {"file": proj.path.name, "file_bytes": proj_size, "tensors": len(proj.layout),
                                          "projector_type": proj.spec.projector_type}
            manifest["gguf"]["serve"] += f" --mmproj {proj.path.name}"
            for t in proj.layout:
                by_source.setdefault(t.members[0], t.name)  # a split source: its first part names it
        for e in plan.entries:
            manifest["tensors"][e.name]["gguf_type"] = e.storage
            manifest["tensors"][e.name]["gguf_name"] = by_source[e.name]
            manifest["tensors"][e.name]["shape"] = list(e.shape)
            if proj is not None and e.name in proj.sources:
                manifest["tensors"][e.name]["gguf_file"] = proj.path.name
        write_manifest(tmp, manifest)
    return out
