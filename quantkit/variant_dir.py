"""What every format's variant directory holds besides its weights: the source's side files (config,
tokenizer, processor, chat template, remote-code modules) and the common part of `quantkit.json`.
A format writes its weights and config into the run's output directory, then calls these; formats
whose weights are safetensors shards (GPTQ, compressed-tensors) write the whole directory with
`write_sharded_variant`, giving only their `quantization_config`.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .checkpoint import Checkpoint, ShardWriter
from .errors import QuantkitError
from .format import Produce
from .manifest import write_manifest
from .outdir import output_dir
from .plan import Plan
from .runstate import RunProgress
from .scheme import scheme_label
from .version import QUANTKIT_VERSION

# Source files a variant must not inherit: the source's model card describes another model, and
# the weights index is rewritten.
_NOT_COPIED = {"README.md", ".gitattributes"}


def copy_side_files(ckpt: Checkpoint, dest) -> None:
    for p in ckpt.side_files():
        if p.name not in _NOT_COPIED and p.name != "config.json":
            shutil.copy2(p, dest / p.name)


def manifest_record(ckpt: Checkpoint, plan: Plan, seconds: float, extra: dict) -> dict:
    """The manifest fields every format writes (the caller adds its own, then `write_manifest`)."""
    return {
        "quantkit_version": QUANTKIT_VERSION,
        "format": plan.format.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"id": ckpt.source, "revision": ckpt.revision, "model_type": ckpt.config.get("model_type"),
                   "architectures": ckpt.config.get("architectures")},
        "family": plan.family,
        "profile": plan.profile.to_dict(),
        "predicted_tensor_bytes": plan.predicted_bytes,
        "notes": plan.notes,
        "seconds": round(seconds, 2),
        **extra,
        "tensors": {e.name: {"role": e.role.label, "scheme": scheme_label(e.scheme),
                             **({"fallback": e.fallback} if e.fallback else {})}
                    for e in plan.entries},
    }


def remote_code_problems(config: dict, variant) -> list[str]:
    """What keeps a runtime from resolving the config's classes: a model_type transformers does not
    know needs `auto_map.AutoConfig`, and every `MODULE.Class` that `auto_map` names needs MODULE.py in
    the variant (served with --trust-remote-code). Source: transformers 5.24
    dynamic_module_utils.get_class_from_dynamic_module; shared/notes/formats.md (vLLM needs the repo's
    *.py files)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    auto_map = config.get("auto_map") or {}
    bad = []
    if config.get("model_type") not in CONFIG_MAPPING_NAMES and "AutoConfig" not in auto_map:
        bad.append(f"model_type {config.get('model_type')!r} is not built into transformers and config.json has no "
                   "auto_map.AutoConfig")
    for key, ref in sorted(auto_map.items()):
        for r in (ref if isinstance(ref, list) else [ref]):
            if not r:
                continue
            module = r.split("--")[-1].rsplit(".", 1)[0]
            if not (variant / f"{module.replace('.', '/')}.py").is_file():
                bad.append(f"auto_map.{key} -> {r}: {module}.py is not in the variant")
    return bad


def write_sharded_variant(ckpt: Checkpoint, plan: Plan, produce: Produce, out: Path, quantization_config: dict, *,
                          overwrite: bool = False, max_shard_bytes: int = 2 * 2**30, extra: dict | None = None,
                          resume: bool = False, run: dict | None = None, source: dict | None = None) -> Path:
    """A variant whose tensors go into bounded safetensors shards, with the source's config plus
    `quantization_config`, the side files and the manifest, through quantkit.outdir (locked, atomic,
    resumable). `produce(add, progress)` calls `add` with dicts of output tensors in any grouping;
    they are flushed to shards as they come, and the producer checkpoints through `progress` (the
    shard writer's state with its own), so `resume` continues a killed run and writes the same bytes.
    What `produce` returns joins `extra` in the manifest; `source` replaces the manifest's source
    record (a conversion names the variant's source, not the variant)."""
    started = time.time()
    with output_dir(Path(out), overwrite=overwrite, resume=resume, run=run) as rundir:
        tmp = rundir.result
        writer = ShardWriter(tmp, max_shard_bytes)

        def add(group: dict) -> None:
            for name, t in group.items():
                writer.add(name, t)

        produced = produce(add, RunProgress(rundir.state, writer.state, writer.restore)) or {}
        writer.close()
        if writer.total_bytes != plan.predicted_bytes:
            raise QuantkitError(f"internal: wrote {writer.total_bytes} tensor bytes, plan predicted "
                                f"{plan.predicted_bytes}; please report this")
        copy_side_files(ckpt, tmp)
        config = dict(ckpt.config)
        config["quantization_config"] = quantization_config
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        record = manifest_record(ckpt, plan, time.time() - started, {**(extra or {}), **produced})
        if source is not None:
            record["source"] = source
        write_manifest(tmp, record)
    return Path(out)
