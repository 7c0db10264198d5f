"""Memory: exact weight bytes by role from the files (the variant's format reads them), the serving
VRAM estimate (its formula and constants live in quantkit/serving.py, which the allocator uses too;
re-exported here), and the real ERNIE-4.5-VL-28B-A3B table from its config.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from ..adapters import adapter_for, real_config
from ..checkpoint import ConfigCheckpoint
from ..format import format_of_variant
from ..plan import build_plan
from ..profiles import resolve_profile
from ..serving import (ACT_BYTES, CHUNK_TOKENS, GB, KV_BYTES, REAL_MAX_IMAGE_PATCHES,  # noqa: F401 (re-exported)
                       RUNTIME_OVERHEAD_BYTES, GiB, ServingShape, max_image_patches, vram_estimate)

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# -- bytes by role, from the files -----------------------------------------------------------------

def file_bytes(model_dir: str | Path) -> dict:
    """Bytes of a model directory's weights, by role, from its files (the variant's format reads them;
    a source checkpoint reads as the default format's plain safetensors shards). See Format.file_bytes."""
    return format_of_variant(model_dir).file_bytes(Path(model_dir))


# -- the real ERNIE-4.5-VL-28B-A3B ------------------------------------------------------------------

REAL_MODEL = "ERNIE-4.5-VL-28B-A3B"
PRECISIONS = (("bf16", None), ("int8", 8), ("int4", 4), ("2-bit", 2))
# What is commonly quoted for ERNIE-4.5-VL-28B-A3B's weights (model cards, community quant pages):
QUOTED_GB = {"bf16": "~56", "int8": "~28", "int4": "~14-15", "2-bit": "~7-8"}


def real_28b_table(contexts=(4096, 32768), batch: int = 1, config: dict | None = None) -> dict:
    """Weights (exact bytes of the shipped profiles' plans on the real config) and serving VRAM
    estimates for ERNIE-4.5-VL-28B-A3B at bf16 and the w8/w4/w2 profiles, next to the naive
    params x bits / 8 figure and the commonly quoted numbers."""

    config = config or real_config(REAL_MODEL)
    adapter = adapter_for(config)
    ckpt = ConfigCheckpoint(config, "baidu/ERNIE-4.5-VL-28B-A3B-PT (config only)", adapter.tensor_shapes())
    shape = ServingShape.from_config(config, max_image_patches=REAL_MAX_IMAGE_PATCHES)
    params = sum(math.prod(i.shape) for i in ckpt.infos())
    by_kind: dict[str, int] = {}
    for info in ckpt.infos():
        label = adapter.role_of(info.name).kind
        by_kind[label] = by_kind.get(label, 0) + math.prod(info.shape)
    rows = []
    for label, bits in PRECISIONS:
        plan = build_plan(ckpt, adapter, resolve_profile(adapter, bits=bits or 8, profile=None))
        if bits is None:
            weights, profile = params * 2, "source (bf16)"
            quantized_params = 0
            by_role = {label: r["source_bytes"] for label, r in plan.by_role().items()}
        else:
            weights, profile = plan.predicted_bytes, plan.profile.name
            quantized_params = sum(math.prod(e.shape) for e in plan.quantized())
            by_role = {label: r["planned_bytes"] for label, r in plan.by_role().items()}
        naive = params * (16 if bits is None else bits) / 8
        rows.append({"precision": label, "profile": profile, "weights": weights, "naive_weights": int(naive),
                     "quantized_params": quantized_params, "quoted_gb": QUOTED_GB[label], "by_role": by_role,
                     "vram": {str(c): vram_estimate(weights, shape, c, batch) for c in contexts}})
    return {"model": REAL_MODEL, "params": params, "params_by_kind": by_kind,
            "kv_bytes_per_token": shape.kv_bytes_per_token, "shape": asdict(shape), "batch": batch,
            "contexts": list(contexts), "rows": rows,
            "assumptions": {"chunk_tokens": CHUNK_TOKENS, "runtime_overhead_bytes": RUNTIME_OVERHEAD_BYTES,
                            "kv_bytes": KV_BYTES, "activation_bytes": ACT_BYTES,
                            "max_image_patches": REAL_MAX_IMAGE_PATCHES}}


# -- measured (CUDA) -------------------------------------------------------------------------------

def cuda_peak(run) -> dict | None:
    """Peak memory torch allocated on the GPU while ``run(device)`` ran; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run(device)
    torch.cuda.synchronize(device)
    return {"device": torch.cuda.get_device_name(device), "peak_allocated": torch.cuda.max_memory_allocated(device),
            "baseline_allocated": base}
