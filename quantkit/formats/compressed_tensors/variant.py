"""Write a compressed-tensors variant directory: quantized modules as pack-quantized tensors
(weight_packed, weight_scale, weight_shape, weight_zero_point) and kept tensors in bounded shards, the
source's config with the compressed-tensors `quantization_config` added, every side file a runtime
reads, and the `quantkit.json` manifest (quantkit.variant_dir.write_sharded_variant: locked, atomic,
resumable, like the GPTQ format's writer)."""
from __future__ import annotations

from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import Checkpoint
from ...format import Produce
from ...plan import Plan
from ...variant_dir import write_sharded_variant
from .config import build_quantization_config


def write_variant(ckpt: Checkpoint, plan: Plan, produce: Produce, out: Path, **kwargs) -> Path:
    """See write_sharded_variant for the options (overwrite, max_shard_bytes, extra, resume, run, source)."""
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    qcfg = build_quantization_config(plan, adapter)  # fail early if the plan cannot be described
    return write_sharded_variant(ckpt, plan, produce, out, qcfg, **kwargs)
