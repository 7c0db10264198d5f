"""Write a compressed-tensors variant directory: quantized modules as pack-quantized tensors and kept
tensors in bounded shards, the source's config with `quantization_config` added, every side file a
runtime reads, and the `quantkit.json` manifest; through quantkit.outdir (locked, atomic, resumable),
like the GPTQ format's writer."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import Checkpoint, ShardWriter
from ...errors import QuantkitError
from ...format import Produce
from ...manifest import write_manifest
from ...outdir import output_dir
from ...plan import Plan
from ...runstate import RunProgress
from ...variant_dir import copy_side_files, manifest_record
from .config import build_quantization_config


def write_variant(ckpt: Checkpoint, plan: Plan, produce: Produce, out: Path, *, overwrite: bool = False,
                  max_shard_bytes: int = 2 * 2**30, extra: dict | None = None, resume: bool = False,
                  run: dict | None = None, source: dict | None = None) -> Path:
    """`produce(add, progress)` calls `add` with dicts of output tensors in any grouping; they are
    flushed to shards as they come, and the producer checkpoints through `progress` (so `resume`
    continues a killed run). What `produce` returns joins `extra` in the manifest; `source` replaces
    the manifest's source record (a conversion names the variant's source, not the variant)."""
    out = Path(out)
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    qcfg = build_quantization_config(plan, adapter)  # fail early if the plan cannot be described
    started = time.time()
    with output_dir(out, overwrite=overwrite, resume=resume, run=run) as rundir:
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
        config["quantization_config"] = qcfg
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        record = manifest_record(ckpt, plan, time.time() - started, {**(extra or {}), **produced})
        if source is not None:
            record["source"] = source
        write_manifest(tmp, record)
    return out
