"""`quantkit.load(variant)`: a transformers model whose quantized weights are unpacked from the files.

Every module is read the way a GPTQ loader reads it: its scheme comes from `quantization_config`
(base fields + `dynamic` rules), its numbers from qweight/qzeros/scales/g_idx. The dequantized
weights (fp32) then go through transformers' own loading of the Hub layout, so the model is the
real class with the real key conversions. For evaluation on CPU, not for serving.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import adapter_for
from .checkpoint import Checkpoint
from .errors import QuantkitError
from .quant_config import module_scheme
from .quantize.gptq_format import unpack

PACKED = ("qweight", "qzeros", "scales", "g_idx")


def dequantized_state_dict(variant: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the variant in the source's key names, quantized modules dequantized to fp32
    (a GGUF variant: its .gguf read back, see quantkit.gguf.reader)."""
    from .gguf.variant import is_gguf_variant
    if is_gguf_variant(variant):
        from .gguf.reader import dequantized_state_dict as from_gguf
        return from_gguf(variant)
    ckpt = Checkpoint.open(variant)
    qcfg = ckpt.config.get("quantization_config")
    if not qcfg or qcfg.get("quant_method") != "gptq":
        raise QuantkitError(f"{variant}/config.json: no GPTQ quantization_config; not a GPTQ variant")
    names = set(ckpt.names())
    modules = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
    state: dict[str, torch.Tensor] = {}
    for module in modules:
        scheme = module_scheme(qcfg, module)
        if scheme is None:
            raise QuantkitError(f"{variant}: {module} has a qweight but quantization_config skips it (-: rule)")
        parts = {p: f"{module}.{p}" for p in PACKED}
        missing = [n for n in parts.values() if n not in names]
        if missing:
            raise QuantkitError(f"{variant}: {missing[0]} is missing")
        tensors = ckpt.read_many(list(parts.values()))
        qw = unpack({p: tensors[n] for p, n in parts.items()}, scheme.bits, scheme.group_size, scheme.sym)
        state[f"{module}.weight"] = qw.dequantize()
        names -= set(parts.values())
    for n in sorted(names):
        t = ckpt.read(n)
        state[n] = t.float() if t.is_floating_point() else t
    return state


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
