"""The compressed-tensors `pack-quantized` tensors of one linear layer, packed and unpacked by
compressed-tensors' own code (`compressed_tensors.compressors.pack_quantized.helpers`).

For a weight [out, in] with b bits (2..8) and n_groups = in / group_size (1 per channel):
    weight_packed      int32 [out, ceil(in * b / 32)]     codes, packed along the input dimension
    weight_scale       fp32  [out, n_groups]
    weight_shape       int64 [2]                          (out, in)
    weight_zero_point  int32 [ceil(out * b / 32), n_groups]  asymmetric only, packed along the output
                                                             dimension

Conventions read from compressed-tensors 0.20 (`pack_to_int32`, `unpack_from_int32`,
`PackedQuantizationCompressor.decompress`, `quantization/lifecycle/forward.py` `_dequantize`):
- values are signed: the stored code is q = code - 2**(b-1) in [-2**(b-1), 2**(b-1) - 1], and
  `pack_to_int32` adds the offset 2**(b-1) back before packing, so the bits on disk are our unsigned
  code;
- packing is dense: 32 values fill exactly b words, value i of a row starts at bit i*b of the row's
  bit stream, lowest bits first, values straddle words for b = 3, 5, 6, 7 (a row is padded to a
  multiple of 32 values and cut to ceil(in * b / 32) words);
- the zero point is signed the same way (zp = zero - 2**(b-1)) and only stored when asymmetric; a
  symmetric scheme has zp = 0, i.e. our zero 2**(b-1);
- W = (q - zp) * scale, computed in the scale's dtype.

So W = (code - zero) * scale exactly as `QuantizedWeight.dequantize`: the GPTQ solver's codes, scales
and zeros are carried unchanged. Scales are stored as fp32 (they are fp16 numbers, so this is
lossless) because compressed-tensors dequantizes in the scale's dtype: fp16 scales would round
(code - zero) * scale to fp16 in every reader that uses its decompressor (transformers among them),
and the weights would no longer equal quantkit's, the GPTQ variant's, or each other's. The cost is two
bytes per group and output row (1/64 bit per weight at group size 128).

Act-order (`weight_g_idx`, `actorder: group`) is not written: compressed-tensors 0.20 removed it
(`QuantizationArgs.validate_actorder` raises on `group`), so no current reader would load it.
"""
from __future__ import annotations

import math

import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32

from ...quantize.rtn import max_code
from ...scheme import QuantizedWeight

PARTS = ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")
_DTYPES = {"weight_packed": "I32", "weight_scale": "F32", "weight_shape": "I64", "weight_zero_point": "I32"}
MIN_BITS, MAX_BITS = 2, 8  # what vLLM's compressed-tensors WNA16 MoE path takes (notes/formats.md)


def part_dtype(part: str) -> str:
    return _DTYPES[part]


def packed_shapes(out_features: int, in_features: int, bits: int, n_groups: int, sym: bool) -> dict[str, tuple]:
    """Shape of each stored tensor, by part name."""
    shapes = {"weight_packed": (out_features, math.ceil(in_features * bits / 32)),
              "weight_scale": (out_features, n_groups), "weight_shape": (2,)}
    if not sym:
        shapes["weight_zero_point"] = (math.ceil(out_features * bits / 32), n_groups)
    return shapes


def packed_nbytes(out_features: int, in_features: int, bits: int, group_size: int, sym: bool) -> int:
    """Exact bytes of the module's tensors (data only, no file header)."""
    n_groups = in_features // group_size
    return sum(4 * math.prod(s) if p != "weight_shape" else 16
               for p, s in packed_shapes(out_features, in_features, bits, n_groups, sym).items())


def check_bits(bits: int) -> None:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"compressed-tensors pack-quantized stores {MIN_BITS} to {MAX_BITS} bits, not {bits}")


def pack(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """The pack-quantized tensors {weight_packed, weight_scale, weight_shape[, weight_zero_point]}."""
    check_bits(qw.bits)
    out_features, in_features = qw.shape
    g = qw.group_size
    if in_features % g or tuple(qw.scales.shape) != (in_features // g, out_features):
        raise ValueError(f"scales {tuple(qw.scales.shape)} do not match group {g} of weight [{out_features}, {in_features}]")
    if not torch.equal(qw.g_idx.long(), torch.arange(in_features) // g):
        raise ValueError("act-order (g_idx not i // group_size) cannot be stored: compressed-tensors 0.20 "
                         "removed `actorder: group`")
    maxq, offset = max_code(qw.bits), 1 << (qw.bits - 1)
    if qw.codes.min() < 0 or qw.codes.max() > maxq or qw.zeros.min() < 0 or qw.zeros.max() > maxq:
        raise ValueError(f"codes and zeros must lie in [0, {maxq}] for {qw.bits} bits")
    if qw.sym and not bool((qw.zeros == offset).all()):
        raise ValueError(f"a symmetric weight needs every zero point at {offset}")
    out = {"weight_packed": pack_to_int32((qw.codes - offset).to(torch.int8), qw.bits),
           "weight_scale": qw.scales.float().T.contiguous(),
           "weight_shape": torch.tensor([out_features, in_features], dtype=torch.int64)}
    if not qw.sym:
        zp = (qw.zeros.T - offset).to(torch.int8).contiguous()  # [out, n_groups]
        out["weight_zero_point"] = pack_to_int32(zp, qw.bits, packed_dim=0)
    return out


def unpack(tensors: dict[str, torch.Tensor], bits: int, group_size: int, sym: bool) -> QuantizedWeight:
    """Inverse of pack; `group_size` as the scheme says it (-1: per channel)."""
    check_bits(bits)
    shape = [int(v) for v in tensors["weight_shape"].tolist()]
    if len(shape) != 2:
        raise ValueError(f"weight_shape {shape} is not [out, in]")
    out_features, in_features = shape
    g = in_features if group_size == -1 else group_size
    if g <= 0 or in_features % g:
        raise ValueError(f"group_size {group_size} does not divide in_features {in_features}")
    scale = tensors["weight_scale"]
    expect = packed_shapes(out_features, in_features, bits, in_features // g, sym)
    for part, want in expect.items():
        if part not in tensors:
            raise ValueError(f"{part} missing ({'asymmetric' if not sym else 'symmetric'} scheme)")
        if tuple(tensors[part].shape) != want:
            raise ValueError(f"{part} {list(tensors[part].shape)}, expected {list(want)} for {bits}-bit "
                             f"group {g} of weight {shape}")
    offset = 1 << (bits - 1)
    codes = unpack_from_int32(tensors["weight_packed"], bits, torch.Size(shape)).to(torch.int32) + offset
    if sym:
        zeros = torch.full((in_features // g, out_features), offset, dtype=torch.int32)
    else:
        zp = unpack_from_int32(tensors["weight_zero_point"], bits, torch.Size((out_features, in_features // g)),
                               packed_dim=0)
        zeros = (zp.to(torch.int32) + offset).T.contiguous()
    g_idx = (torch.arange(in_features) // g).to(torch.int32)
    return QuantizedWeight(codes.contiguous(), scale.float().T.contiguous(), zeros, g_idx, bits, g, sym)
