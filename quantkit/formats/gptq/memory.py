"""Bytes by role of a GPTQ variant (or a plain safetensors checkpoint), read from the shards' headers,
never from a plan: every tensor of every shard is attributed to the role of its weight
(`...qweight/.qzeros/.scales/.g_idx` to the quantized module's `.weight`), and the shards' sizes on
disk = tensor bytes + header bytes exactly."""
from __future__ import annotations

import json
from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import bytes_by_role
from ...errors import VariantCorrupt

_PACKED = (".qweight", ".qzeros", ".scales", ".g_idx")


def file_bytes(model_dir: str | Path) -> dict:
    """Bytes of a GPTQ variant's (or a plain checkpoint's) weights by role: checkpoint.bytes_by_role,
    a quantized module's qweight/qzeros/scales/g_idx counting as one weight of in x out parameters."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    adapter = adapter_for(config, where=str(model_dir / "config.json"))
    return bytes_by_role(model_dir, adapter.role_of, _packed_part, _quantized_params)


def _packed_part(name: str) -> tuple[str, str] | None:
    for suffix in _PACKED:
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def _quantized_params(headers: dict) -> dict[str, int]:
    """in x out of every quantized module, from its g_idx [in] and scales [groups, out] shapes."""
    shapes = {n: meta["shape"] for header in headers.values() for n, meta in header.items()}
    out = {}
    for name in shapes:
        if name.endswith(".qweight"):
            module = name[: -len(".qweight")]
            g_idx, scales = shapes.get(module + ".g_idx"), shapes.get(module + ".scales")
            if g_idx is None or scales is None:
                raise VariantCorrupt(f"{module}: qweight without g_idx/scales")
            out[module] = int(g_idx[0]) * int(scales[1])
    return out
