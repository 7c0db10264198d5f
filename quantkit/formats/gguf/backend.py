"""How the quantize pipeline solves and emits weights for a GGUF plan (`pipeline.backend_for`).

- Q8_0 / Q4_0: GPTQ's (or RTN's) own grid is the type's grid, so the solver runs unchanged and its
  codes and fp16 scales become the blocks (`types.from_quantized`, which checks every group). With
  act-order, groups are static (g_idx = i // 32), since GGUF blocks are consecutive weights.
- K-quants (Q2_K .. Q6_K) / Q4_1: the type's grid is fitted first (`q2k.py`), then GPTQ (or round-to-nearest)
  chooses the codes on it.
Emitted values are `BlockWeight`s under the source tensor name; the GGUF writer stacks and encodes them.
"""
from __future__ import annotations

import torch

from ...quantize.gptq import gptq_quantize
from ...quantize.pipeline import Backend
from ...quantize.rtn import quantize_rtn_experts
from ...scheme import QuantScheme
from .q2k import gptq_on_grid, rtn_on_grid
from .types import BlockWeight, from_quantized, type_for_scheme


class GGUFBackend(Backend):
    def rtn(self, scheme: QuantScheme, W: torch.Tensor) -> list[BlockWeight]:
        t = type_for_scheme(scheme, "scheme")
        if t.fixed_grid:
            return rtn_on_grid(W, t.name)
        # A GGUF block's d is a signed fp16: the largest-magnitude weight lands on the extreme code
        # (llama.cpp's own Q4_0 rule), one step finer than a positive-only scale.
        qws = quantize_rtn_experts(W, scheme.bits, scheme.group_size, scheme.sym, signed=scheme.sym)
        return [from_quantized(qw, t.name, f"matrix {i}") for i, qw in enumerate(qws)]

    def rtn_one(self, scheme: QuantScheme, w: torch.Tensor) -> BlockWeight:
        return self.rtn(scheme, w.unsqueeze(0))[0]

    def gptq(self, scheme: QuantScheme, W: torch.Tensor, H: torch.Tensor) -> tuple[list[BlockWeight], list[int]]:
        t = type_for_scheme(scheme, "scheme")
        if t.fixed_grid:
            return gptq_on_grid(W, H, t.name, act_order=scheme.desc_act)
        res = gptq_quantize(W, H, bits=scheme.bits, group_size=scheme.group_size, sym=scheme.sym,
                            act_order=scheme.desc_act, static_groups=scheme.desc_act, signed=scheme.sym)
        return [from_quantized(qw, t.name, f"matrix {i}") for i, qw in enumerate(res.split())], res.fallback_experts

    def emit(self, entry, result: BlockWeight) -> dict:
        return {entry.name: result}
