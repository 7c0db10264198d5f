"""How the quantize pipeline emits a GPTQ plan's results: each module's qweight/qzeros/scales/g_idx
under the module's checkpoint name (the solvers are the pipeline's own: GPTQ's grid is the scheme's)."""
from __future__ import annotations

from ...plan import TensorPlan
from ...quantize.pipeline import Backend
from ...scheme import QuantizedWeight
from .packing import pack


def packed(entry: TensorPlan, qw: QuantizedWeight) -> dict:
    return {f"{entry.module}.{k}": v for k, v in pack(qw).items()}


class GPTQBackend(Backend):
    def emit(self, entry: TensorPlan, result: QuantizedWeight) -> dict:
        return packed(entry, result)
