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
from typing import Callable

from ...adapters import adapter_for
from ...checkpoint import Checkpoint, atomic_output_dir
from ...errors import QuantkitError, VariantCorrupt
from ...manifest import read_manifest, write_manifest
from ...plan import Plan
from ...variant_dir import copy_side_files, manifest_record
from .writer import GGUFFile, _pad, check_architecture, check_tokenizer, expert_type, gguf_layout

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
    check_tokenizer(ckpt.path)


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


def is_gguf_variant(variant: str | Path) -> bool:
    p = Path(variant) / "quantkit.json"
    try:
        return p.is_file() and json.loads(p.read_text()).get("format") == FORMAT_NAME
    except (OSError, json.JSONDecodeError):
        return False


def write_gguf_variant(
    ckpt: Checkpoint,
    plan: Plan,
    produce: Callable[[Callable[[dict], None]], None],
    out: Path,
    *,
    overwrite: bool = False,
    extra: dict | None = None,
    source_record: dict | None = None,
    name: str | None = None,
    **_ignored,
) -> Path:
    """`produce(add)` calls `add` with {source tensor name: tensor or BlockWeight}, in any grouping.
    `source_record` / `name` override the manifest's source and the file's base name (export-gguf,
    whose checkpoint is a GPTQ variant of that source)."""
    out = Path(out)
    config = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
    adapter = adapter_for(config)
    check_source(ckpt, adapter)
    layout = gguf_layout(plan, adapter)  # fail early if a tensor has no place in the file
    name = base_name(name or ckpt.source)
    fname = f"{name}-{expert_type(plan)}.gguf"
    started = time.time()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        f = GGUFFile(tmp / fname, ckpt.path, config, adapter, plan, name)
        try:
            produced = produce(f.add) or {}
        except BaseException:
            f.abort()
            raise
        size = f.close()
        predicted = _pad(f.header_bytes) + sum(_pad(t.nbytes) for t in layout)
        data = sum(t.nbytes for t in layout)
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
        for e in plan.entries:
            manifest["tensors"][e.name]["gguf_type"] = e.storage
            manifest["tensors"][e.name]["gguf_name"] = by_source[e.name]
            manifest["tensors"][e.name]["shape"] = list(e.shape)
        write_manifest(tmp, manifest)
    return out
