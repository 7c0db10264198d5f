"""Bytes by role of a GPTQ variant (or a plain safetensors checkpoint), read from the shards' headers,
never from a plan: every tensor of every shard is attributed to the role of its weight
(`...qweight/.qzeros/.scales/.g_idx` to the quantized module's `.weight`), and the shards' sizes on
disk = tensor bytes + header bytes exactly."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ...adapters import adapter_for
from ...checkpoint import INDEX_NAME, SINGLE_NAME, read_safetensors_header
from ...errors import VariantCorrupt

_PACKED = (".qweight", ".qzeros", ".scales", ".g_idx")


def shard_files(model_dir: str | Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / INDEX_NAME
    if index.is_file():
        return [model_dir / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [model_dir / SINGLE_NAME]


def file_bytes(model_dir: str | Path) -> dict:
    """Bytes of a model directory's weights, by role, read from the safetensors headers.

    Returns ``{"files": {shard: size}, "file_bytes", "header_bytes", "tensor_bytes", "params",
    "by_role": {label: {"tensors", "params", "bytes", "bits_per_param", "types"}}}`` where ``file_bytes`` is the
    sum of the shards' sizes on disk (= ``tensor_bytes + header_bytes``), ``tensors`` counts weights
    (a quantized module's four packed tensors count once) and ``params`` counts the weights' elements
    (for a quantized module: out x in of the weight it stands for) and ``types`` lists the safetensors
    dtypes of the role's tensors kept unpacked (a quantized module's packed tensors are not listed)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    adapter = adapter_for(config, where=str(model_dir / "config.json"))
    files, by_role = {}, {}
    header_total = tensor_total = 0
    for path in shard_files(model_dir):
        size = os.path.getsize(path)
        header = read_safetensors_header(path)
        files[path.name] = size
        data = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in header.values())
        tensor_total += data
        header_total += size - data
        shapes = {n: v["shape"] for n, v in header.items()}
        for name, meta in header.items():
            nbytes = meta["data_offsets"][1] - meta["data_offsets"][0]
            weight, part = _weight_name(name)
            role = adapter.role_of(weight)
            row = by_role.setdefault(role.label, {"tensors": 0, "params": 0, "bytes": 0, "types": set()})
            row["bytes"] += nbytes
            if part is None:
                row["tensors"] += 1
                row["params"] += math.prod(meta["shape"])
                row["types"].add(meta["dtype"])
            elif part == ".qweight":
                module = weight[: -len(".weight")]
                row["tensors"] += 1
                row["params"] += _quantized_params(shapes, module, meta["shape"])
    for row in by_role.values():
        row["bits_per_param"] = round(8 * row["bytes"] / row["params"], 4) if row["params"] else None
        row["types"] = sorted(row["types"])
    return {"files": files, "file_bytes": sum(files.values()), "header_bytes": header_total,
            "tensor_bytes": tensor_total, "params": sum(r["params"] for r in by_role.values()),
            "by_role": dict(sorted(by_role.items()))}


def _weight_name(name: str) -> tuple[str, str | None]:
    for suffix in _PACKED:
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".weight", suffix
    return name, None


def _quantized_params(shapes: dict, module: str, qweight_shape) -> int:
    g_idx, scales = shapes.get(module + ".g_idx"), shapes.get(module + ".scales")
    if g_idx is not None and scales is not None:
        return int(g_idx[0]) * int(scales[1])  # in x out
    raise VariantCorrupt(f"{module}: qweight without g_idx/scales in the same shard")
