"""Write a GPTQ variant directory: qweight/qzeros/scales/g_idx per quantized module and the kept
tensors in bounded shards, the source's config with the GPTQ `quantization_config` added, every side
file a runtime reads, and the `quantkit.json` manifest (quantkit.variant_dir.write_sharded_variant:
locked, atomic, resumable)."""
from __future__ import annotations

from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import Checkpoint
from ...format import Produce
from ...plan import Plan
from ...variant_dir import write_sharded_variant
from .config import build_quantization_config


def write_variant(ckpt: Checkpoint, plan: Plan, produce: Produce, out: Path, **kwargs) -> Path:
    """`produce(add, progress)` adds each module's packed tensors (a kept tensor as stored); see
    write_sharded_variant for the options (overwrite, max_shard_bytes, extra, resume, run)."""
    qcfg = build_quantization_config(plan, adapter_for(ckpt.config))  # fail early if the plan cannot be described
    return write_sharded_variant(ckpt, plan, produce, out, qcfg, **kwargs)
