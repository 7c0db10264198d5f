"""`quantkit.load(variant)`: a transformers model whose quantized weights are decoded from the files.

The variant's format (its manifest says which) reads every tensor back in the source's key names,
quantized ones dequantized to fp32; the state then goes through transformers' own loading of the Hub
layout, so the model is the real class with the real key conversions. For evaluation on CPU, not
for serving.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import adapter_for
from .checkpoint import Checkpoint
from .format import format_of_variant


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the variant in the source's key names, quantized modules dequantized to fp32."""
    return format_of_variant(variant).dequantized_state_dict(Path(variant))


def load(variant: str | Path, dtype: torch.dtype = torch.float32):
    """The variant as a transformers model (eval mode) with dequantized weights."""
    variant = Path(variant)
    config = json.loads((variant / "config.json").read_text())
    adapter = adapter_for(config, where=str(variant / "config.json"))
    state = dequantized_state_dict(variant)
    model = adapter.model_class().from_pretrained(None, config=adapter.native_config(), state_dict=state,
                                                  dtype=dtype)
    return model.eval()


def load_source(model_dir: str | Path, dtype: torch.dtype = torch.float32):
    """The unquantized source through the same path, so comparisons differ only in the weights."""
    ckpt = Checkpoint.open(model_dir)
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    state = {n: ckpt.read(n) for n in ckpt.names()}
    state = {n: (t.float() if t.is_floating_point() else t) for n, t in state.items()}
    return adapter.model_class().from_pretrained(None, config=adapter.native_config(), state_dict=state,
                                                 dtype=dtype).eval()
