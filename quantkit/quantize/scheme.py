"""Quantization schemes (what to do to one tensor) and quantized weights (what came out).

These two dataclasses are the contract between the plan, the quantizers (rtn, gptq) and the
on-disk writers (gptq_format, later gguf): quantizers take a float weight and a scheme and return a
`QuantizedWeight`; writers pack a `QuantizedWeight`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class QuantScheme:
    bits: int
    group_size: int = 128  # -1 = one group over the whole input dimension (per-channel)
    sym: bool = True
    method: str = "rtn"
    desc_act: bool = False  # GPTQ act-order; stored through g_idx

    def __post_init__(self):
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {self.bits}")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"group_size must be positive or -1, got {self.group_size}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    def effective_group_size(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantizedWeight:
    """Integer codes plus the numbers that turn them back into a weight of shape [out, in].

    codes:  int32 [out, in], each in [0, 2**bits - 1]
    scales: float32 [n_groups, out], values exactly representable in fp16 (the file stores fp16)
    zeros:  int32 [n_groups, out], the real zero point (the GPTQ file stores zero - 1)
    g_idx:  int32 [in], the group of each input column
    Dequantized: W[:, i] = (codes[:, i] - zeros[g_idx[i]]) * scales[g_idx[i]]
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    bits: int
    group_size: int  # the real group length (in_features when per-channel)
    sym: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def rows(self, start: int, stop: int) -> "QuantizedWeight":
        """Output rows start:stop (GPTQ quantizes rows independently: a fused [gate; up] solve splits)."""
        return QuantizedWeight(self.codes[start:stop].contiguous(), self.scales[:, start:stop].contiguous(),
                               self.zeros[:, start:stop].contiguous(), self.g_idx.clone(), self.bits, self.group_size,
                               self.sym)

    def dequantize(self) -> torch.Tensor:
        g = self.g_idx.long()
        scale = self.scales.float()[g].T  # [out, in]
        zero = self.zeros.float()[g].T
        return (self.codes.float() - zero) * scale
