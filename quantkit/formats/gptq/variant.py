"""Write a GPTQ variant directory: quantized and kept tensors in bounded shards, the source's config
with `quantization_config` added, every side file a runtime reads, and the `quantkit.json` manifest.

Everything is written into a temporary directory and renamed into place at the end
(`atomic_output_dir`), so a failed or interrupted run leaves nothing behind.
"""
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
                  run: dict | None = None) -> Path:
    """`produce(add)` calls `add` with dicts of output tensors (a kept tensor, or one module's
    qweight/qzeros/scales/g_idx), in any grouping; they are flushed to shards as they come. What
    `produce` returns (fallbacks, solver figures) joins `extra` in the manifest. The producer
    checkpoints through the RunProgress it is given (the shard writer's state with its own), so a
    killed run continues with `resume` and writes the same bytes."""
    out = Path(out)
    adapter = adapter_for(ckpt.config)
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
        write_manifest(tmp, manifest_record(ckpt, plan, time.time() - started, {**(extra or {}), **produced}))
    return out
