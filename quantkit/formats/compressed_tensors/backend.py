"""How the quantize pipeline emits a compressed-tensors plan's results: each module's
weight_packed/weight_scale/weight_shape(/weight_zero_point) under the module's checkpoint name (the
solvers are the pipeline's own: the grid is the scheme's, as for GPTQ)."""
from __future__ import annotations

from ...plan import TensorPlan
from ...quantize.pipeline import Backend
from ...scheme import QuantizedWeight
from .packing import pack


def packed(module: str, qw: QuantizedWeight) -> dict:
    return {f"{module}.{k}": v for k, v in pack(qw).items()}


class CompressedTensorsBackend(Backend):
    def emit(self, entry: TensorPlan, result: QuantizedWeight) -> dict:
        return packed(entry.module, result)
