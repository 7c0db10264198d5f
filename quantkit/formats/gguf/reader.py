"""A GGUF variant read back with the `gguf` package's reader: raw blocks decoded to codes, scales and
mins (`BlockWeight`), and the dequantized weights under the source's tensor names, so
`quantkit.load` builds the same transformers model from a GGUF variant as from a GPTQ one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGUFReader

from ...errors import VariantCorrupt
from ...manifest import read_manifest
from .projector import read_projector
from .types import QUANT_TYPES, BlockWeight, decode, float_from_array
from .variant import gguf_file


def open_reader(variant: str | Path) -> GGUFReader:
    path = gguf_file(variant)
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as e:
        raise VariantCorrupt(f"{path}: not a readable GGUF file ({e})")


def _adapter(variant: str | Path):
    """The model family's adapter, from the variant's config.json."""
    import json

    from ...adapters import adapter_for

    path = Path(variant) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VariantCorrupt(f"{path}: unreadable ({e}); a GGUF variant keeps its source's config.json")
    return adapter_for(config, where=str(path))


def source_tensors(variant: str | Path, reader: GGUFReader | None = None) -> dict[str, BlockWeight | torch.Tensor]:
    """Every source tensor of the variant (quantkit.json names each one's GGUF tensor and shape):
    a BlockWeight for a quantized weight (an expert is cut out of its layer's stacked tensor),
    else the float tensor in its source shape (BF16 stays bfloat16)."""
    manifest = read_manifest(Path(variant))
    reader = reader or open_reader(variant)
    by_gguf = {t.name: t for t in reader.tensors}
    members: dict[str, list[str]] = {}
    beside: dict[str, dict[str, tuple]] = {}  # projector file -> {source: shape}
    for name, rec in manifest["tensors"].items():
        if rec.get("gguf_file"):
            beside.setdefault(rec["gguf_file"], {})[name] = tuple(rec["shape"])
        else:
            members.setdefault(rec["gguf_name"], []).append(name)
    out: dict[str, BlockWeight | torch.Tensor] = {}
    adapter = None
    for fname, shapes in beside.items():  # the vision tower, in the projector file (mmproj)
        adapter = adapter or _adapter(variant)
        out.update(read_projector(Path(variant) / fname, adapter, shapes))
    for gname, names in members.items():
        t = by_gguf.get(gname)
        if t is None:
            raise VariantCorrupt(f"{variant}: GGUF tensor {gname} (for {names[0]}) is missing from the file")
        type_name = t.tensor_type.name
        data = np.asarray(t.data)
        if len(names) > 1:  # stacked experts, in expert order
            adapter = adapter or _adapter(variant)
            names = sorted(names, key=lambda n: adapter.role_of(n).expert)
            data = data.reshape(len(names), -1)
        else:
            data = data.reshape(1, -1)
        for k, n in enumerate(names):
            shape = tuple(manifest["tensors"][n]["shape"])
            if type_name in QUANT_TYPES:
                out[n] = decode(data[k], type_name, shape)
            else:
                out[n] = float_from_array(data[k], type_name, shape)
    return out


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor in the source's key names; quantized weights dequantized to fp32 exactly as
    llama.cpp dequantizes them (BlockWeight.dequantize), floats as stored."""
    state = {}
    for name, v in source_tensors(variant).items():
        state[name] = v.dequantize() if isinstance(v, BlockWeight) else v.float()
    return state
