"""Round-to-nearest (RTN) group quantization, and the per-group helpers that GPTQ reuses.

Conventions are those of the GPTQ reference quantizer (IST-DASLab/gptq `quant.py`,
`Quantizer.find_params`, carried unchanged into GPTQModel `gptqmodel/quantization/quantizer.py`),
so the codes we write are the codes a peer tool writes. For one group x of one output row:

- maxq = 2**bits - 1 and the range always contains 0: xmin = min(x, 0), xmax = max(x, 0).
- symmetric: zero = 2**(bits-1) = h, so the grid is [-h, h - 1] * scale, one step wider below than
  above. The reference takes scale = 2 max|x| / maxq, which puts +max|x| half a step beyond the top
  code (clipped: at 8 bits that made RTN 23 % worse than llama.cpp's Q8_0 rounding). We take the
  smallest scale that holds both ends: scale = max(-xmin / h, xmax / (h - 1)) (xmin = min(x, 0),
  xmax = max(x, 0)): nothing is clipped, and the step is never coarser than llama.cpp's Q8_0
  (amax / 127). With `signed` (GGUF Q4_0, whose fp16 d may be negative), llama.cpp's own rule: the
  value of largest magnitude lands exactly on code -h, scale = that value / -h.
- asymmetric: scale = (xmax - xmin) / maxq, zero = round(-xmin / scale), clamped to [0, maxq].
- an all-zero group gets xmin = -1, xmax = +1 (reference), so its scale is positive; all its codes
  equal the zero point and it dequantizes to exactly 0.
- code = clamp(round(x / scale) + zero, 0, maxq), torch.round (half to even) like the reference.

We add one step: the scale is rounded to fp16 *before* the zero point and the codes are chosen. The
checkpoint stores fp16 scales, so the weight we dequantize is exactly what a loader dequantizes.

All helpers broadcast over leading dimensions, so the same functions serve one matrix [out, in] and
a stack of experts [B, out, in].
"""
from __future__ import annotations

import torch

from quantkit.scheme import SUPPORTED_BITS, QuantizedWeight

# A scale below the smallest fp16 subnormal would be stored as 0, one above the fp16 maximum as inf.
FP16_SMALLEST = 2.0**-24
FP16_LARGEST = 65504.0


def max_code(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    return 2**bits - 1


def resolve_group_size(group_size: int, in_features: int) -> int:
    """The real group length: -1 means one group over the whole row (per-channel)."""
    if group_size == -1:
        return in_features
    if group_size <= 0 or in_features % group_size:
        raise ValueError(
            f"group_size {group_size} must be -1 or a positive divisor of in_features {in_features}"
        )
    return group_size


def to_fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Nearest fp16 value of each scale, returned as fp32, kept finite and away from zero (its sign
    kept: a `signed` grid's scale may be negative)."""
    return (scale.sign() + (scale == 0)) * scale.abs().clamp(FP16_SMALLEST, FP16_LARGEST).half().float()


def group_scale_zero(x: torch.Tensor, bits: int, sym: bool, signed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of x [..., rows, cols], the group being the cols.

    Returns fp32 (scale, zero) of shape [..., rows]; scale is fp16-representable and > 0 (< 0 allowed
    only with `signed`), zero holds integers in [0, maxq] (symmetric) or [1, maxq] (asymmetric,
    loadable by GPTQ v1 readers).
    """
    maxq = max_code(bits)
    xmin = x.amin(dim=-1).clamp(max=0)
    xmax = x.amax(dim=-1).clamp(min=0)
    all_zero = xmax == xmin  # the range contains 0, so this only happens for an all-zero group
    xmin = torch.where(all_zero, -1.0, xmin)
    xmax = torch.where(all_zero, 1.0, xmax)
    if sym:
        half = (maxq + 1) // 2
        if signed:
            extreme = torch.where(-xmin >= xmax, xmin, xmax)
            scale = to_fp16_scale(extreme / -half)
        else:
            scale = to_fp16_scale(torch.maximum(-xmin / half, xmax / (half - 1)))
        return scale, torch.full_like(scale, half)
    scale = to_fp16_scale((xmax - xmin) / maxq)
    zero = torch.round(-xmin / scale).clamp(0, maxq)
    # The GPTQ v1 file stores zero - 1, and loaders add 1 back without wrapping, so a zero of 0
    # (a group with no negative value) would be read as 2**bits. Keep zero >= 1 and widen the
    # scale so the group's maximum still fits in the codes above it.
    low = zero < 1
    if low.any():
        scale = torch.where(low, to_fp16_scale(torch.maximum(xmax / (maxq - 1), scale)), scale)
        zero = torch.where(low, torch.ones_like(zero), zero)
    return scale, zero


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (as fp32 integers) of x on the grid given by scale/zero, which broadcast against x."""
    return torch.clamp(torch.round(x / scale) + zero, 0, max_code(bits))


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return (codes - zero) * scale


def quantize_rtn_experts(
    weight: torch.Tensor, bits: int, group_size: int, sym: bool = True, signed: bool = False
) -> list[QuantizedWeight]:
    """RTN of a stack of matrices [B, out, in] in one vectorised pass, one result per matrix."""
    if weight.dim() != 3:
        raise ValueError(f"expected a weight stack [B, out, in], got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight holds NaN or inf; cannot quantize it")
    n_mats, out_features, in_features = weight.shape
    g = resolve_group_size(group_size, in_features)
    groups = weight.float().reshape(n_mats, out_features, in_features // g, g)
    scale, zero = group_scale_zero(groups, bits, sym, signed)  # [B, out, n_groups]
    codes = quantize_codes(groups, scale.unsqueeze(-1), zero.unsqueeze(-1), bits)
    codes = codes.reshape(n_mats, out_features, in_features).to(torch.int32)
    scales = scale.transpose(1, 2).contiguous()
    zeros = zero.transpose(1, 2).to(torch.int32).contiguous()
    g_idx = torch.arange(in_features, dtype=torch.int32) // g
    return [
        QuantizedWeight(codes[b], scales[b], zeros[b], g_idx.clone(), bits, g, sym)
        for b in range(n_mats)
    ]


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int, sym: bool = True) -> QuantizedWeight:
    """RTN of one matrix [out, in]; group_size -1 is per-channel and must otherwise divide in."""
    if weight.dim() != 2:
        raise ValueError(f"expected a weight [out, in], got shape {tuple(weight.shape)}")
    return quantize_rtn_experts(weight.unsqueeze(0), bits, group_size, sym)[0]
