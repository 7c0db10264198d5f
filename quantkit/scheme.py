"""Quantization schemes (what to do to one tensor) and quantized weights (what came out).

These two dataclasses are the contract between the plan, the quantizers (rtn, gptq) and the output
formats (quantkit/formats): quantizers take a float weight and a scheme and return a
`QuantizedWeight`; a format packs a `QuantizedWeight` into its own tensors.

A scheme's *label* (`gptq-w4g128`, `rtn-w2ch-asym`, `gptq-w8g32-actorder`; `keep` for a tensor left
at source precision) is how manifests, plans and cards name it: `scheme_label` writes it and
`parse_scheme_label` reads it back, here and nowhere else.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import torch

# Every width the solvers produce; each format refuses at plan time the widths it cannot store
# (GPTQ 2/3/4/8, GGUF its types, compressed-tensors 2..8).
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)
METHODS = ("rtn", "gptq")


@dataclass(frozen=True)
class QuantScheme:
    bits: int
    group_size: int = 128  # -1 = one group over the whole input dimension (per-channel)
    sym: bool = True
    method: str = "rtn"
    desc_act: bool = False  # GPTQ act-order; stored through g_idx
    # Each group's scale (and min) stored as a `scale_bits`-bit code against one fp16 factor per 256
    # weights (GGML's K-quants: 4, 6 or 8); None: each group's scale is itself an fp16 number.
    scale_bits: int | None = None

    def __post_init__(self):
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {self.bits}")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"group_size must be positive or -1, got {self.group_size}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.scale_bits is not None and not 1 <= self.scale_bits <= 8:
            raise ValueError(f"scale_bits must be 1..8 or None, got {self.scale_bits}")

    def effective_group_size(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return scheme_label(self)


def fit_group(scheme: QuantScheme, in_features: int, min_group: int = 32) -> tuple[QuantScheme, str | None]:
    """Keep the group size if it divides the input width, else halve it down to `min_group`, else go
    per-channel; returns the scheme and the fallback in words (None when the scheme fits)."""
    g = scheme.group_size
    if g == -1 or in_features % g == 0:
        return scheme, None
    cand = g // 2
    while cand >= min_group and in_features % cand:
        cand //= 2
    new = cand if cand >= min_group else -1
    what = f"group {new}" if new != -1 else "per-channel"
    return replace(scheme, group_size=new), f"group_size {g} does not divide in_features {in_features}: {what}"


KEEP = "keep"
_LABEL = re.compile(r"^(?P<method>[a-z]+)-w(?P<bits>\d+)(?:g(?P<group>\d+)|(?P<ch>ch))"
                    r"(?P<asym>-asym)?(?:-s(?P<sb>\d+))?(?P<act>-actorder)?$")


def scheme_label(s: QuantScheme | None) -> str:
    """`gptq-w4g128`, `rtn-w2ch-asym`, `gptq-w8g32-actorder`, `gptq-w4g32-asym-s6` (6-bit scale
    codes: Q4_K); `keep` for None."""
    if s is None:
        return KEEP
    g = "ch" if s.group_size == -1 else f"g{s.group_size}"
    sb = "" if s.scale_bits is None else f"-s{s.scale_bits}"
    return f"{s.method}-w{s.bits}{g}{'' if s.sym else '-asym'}{sb}{'-actorder' if s.desc_act else ''}"


def parse_scheme_label(label: str | None) -> QuantScheme | None:
    """The scheme a label names; None for `keep` or a label that names no valid scheme."""
    m = _LABEL.match(label or "")
    if not m:
        return None
    try:
        return QuantScheme(bits=int(m["bits"]), group_size=-1 if m["ch"] else int(m["group"]), sym=not m["asym"],
                           method=m["method"], desc_act=bool(m["act"]),
                           scale_bits=int(m["sb"]) if m["sb"] else None)
    except ValueError:
        return None


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
