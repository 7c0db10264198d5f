"""The GPTQ v1 checkpoint tensors (`checkpoint_format: gptq`) of one linear layer.

For a weight [out, in] with b bits and n_groups = in / group_size (see shared/notes/formats.md):
    qweight int32 [in * b / 32, out]       codes, packed along the input dimension
    qzeros  int32 [n_groups, out * b / 32] zero points minus one, packed along the output dimension
    scales  fp16  [n_groups, out]
    g_idx   int32 [in]                     group of each input row

Bit order, every width: along the packed dimension the values form one little-endian bit stream
cut into int32 words; value k occupies bits [b*k, b*k + b) of the stream, i.e. it starts at bit
(b*k) % 32 of word (b*k) // 32. For b = 2, 4, 8 no value crosses a word (row i of word j at bit
b * (i % (32/b))). For b = 3 a run of 32 values fills exactly 3 words and two values straddle:
value 10 has its low 2 bits at bits 30-31 of word 0 and its high bit at bit 0 of word 1; value 21
has its low bit at bit 31 of word 1 and its high 2 bits at bits 0-1 of word 2. This is the layout
written by AutoGPTQ `auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py` `QuantLinear.pack` (bits == 3
branch, same for qweight and qzeros) and read back by the torch path of the same file's `forward`
(shift table [[0,3,..,27,30,0], [0,1,4,..,28,31], [0,2,5,..,26,29,0]] and the fix-ups of values 10
and 21); GPTQModel's `dequantize_weight` uses the same table. Read, not copied.

Divisibility: a whole number of words needs the packed length to be a multiple of
32 / gcd(b, 32) values: 16 for 2 bits, 32 for 3 bits, 8 for 4 bits, 4 for 8 bits; this applies to
in_features (qweight) and to out_features (qzeros). GPTQModel and AutoGPTQ size their buffers as
`in // 32 * b` and `out // 32 * b`, so a file meant for them also wants in and out multiples of 32.

Zero points: the file stores zero - 1. An asymmetric zero of 0 gives -1, which we store as its low
b bits (all ones) so it never spills into a neighbour, and read back as (stored + 1) mod 2**b.
Loaders that add 1 without the modulo (AutoGPTQ's cuda_old path, exllama-style kernels) read such a
group's zero as 2**b; v1 cannot express zero 0 for them (the reason `gptq_v2` exists).
"""
from __future__ import annotations

from math import gcd

import torch

from ...quantize.rtn import max_code, resolve_group_size
from ...scheme import QuantizedWeight

# The widths the GPTQ format stores and its readers unpack (GPTQModel, vLLM, AutoGPTQ)
GPTQ_BITS = (2, 3, 4, 8)
_WORD_BITS = 32
_WORD_MASK = (1 << _WORD_BITS) - 1


def pack_multiple(bits: int) -> int:
    """How many values a packed dimension must be a multiple of, so that they fill whole words."""
    max_code(bits)  # validates bits
    return _WORD_BITS // gcd(bits, _WORD_BITS)


def check_packable(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """Raise ValueError unless [out, in] can be stored at this width; returns the real group size."""
    multiple = pack_multiple(bits)
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if size <= 0 or size % multiple:
            raise ValueError(
                f"{bits}-bit GPTQ packing needs {name} to be a positive multiple of {multiple}, "
                f"got {size} (weight [{out_features}, {in_features}])"
            )
    return resolve_group_size(group_size, in_features)


def packed_shapes(
    out_features: int, in_features: int, bits: int, group_size: int
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of each of the four tensors, by name."""
    g = check_packable(out_features, in_features, bits, group_size)
    n_groups = in_features // g
    return {
        "qweight": ((in_features * bits // _WORD_BITS, out_features), torch.int32),
        "qzeros": ((n_groups, out_features * bits // _WORD_BITS), torch.int32),
        "scales": ((n_groups, out_features), torch.float16),
        "g_idx": ((in_features,), torch.int32),
    }


def packed_nbytes(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """Exact byte count of the four tensors (their data, without file headers)."""
    total = 0
    for shape, dtype in packed_shapes(out_features, in_features, bits, group_size).values():
        numel = 1
        for dim in shape:
            numel *= dim
        total += numel * dtype.itemsize
    return total


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit values held in int64 -> the same bit pattern as int32."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _positions(bits: int):
    """For each value of a run that fills whole words: (value, word, bit offset)."""
    for k in range(pack_multiple(bits)):
        start = bits * k
        yield k, start // _WORD_BITS, start % _WORD_BITS


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack values [n, m] (each in [0, 2**bits)) along dim 0 into int32 words [n * bits / 32, m]."""
    run = pack_multiple(bits)
    n, m = values.shape
    if _WORD_BITS % bits == 0:  # 2, 4, 8 bits: no value straddles; int32 shifts wrap into the sign bit
        v = values.to(torch.int32).reshape(n // run, run, m)
        words = v[:, 0].clone(memory_format=torch.contiguous_format)
        for k in range(1, run):
            words |= v[:, k] << (bits * k)
        return words
    words_per_run = run * bits // _WORD_BITS
    v = values.to(torch.int64).reshape(n // run, run, m)
    words = torch.zeros(n // run, words_per_run, m, dtype=torch.int64)
    for k, word, offset in _positions(bits):
        words[:, word] |= (v[:, k] << offset) & _WORD_MASK
        if offset + bits > _WORD_BITS:  # straddles: the high bits open the next word
            words[:, word + 1] |= v[:, k] >> (_WORD_BITS - offset)
    return _to_int32(words.reshape(n * bits // _WORD_BITS, m))


def unpack_rows(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of pack_rows: int32 words [n * bits / 32, m] -> int32 values [n, m]."""
    run = pack_multiple(bits)
    words_per_run = run * bits // _WORD_BITS
    if words.shape[0] % words_per_run:
        raise ValueError(f"{bits}-bit data needs a multiple of {words_per_run} words, got {words.shape[0]}")
    m = words.shape[1]
    w = (words.to(torch.int64) & _WORD_MASK).reshape(-1, words_per_run, m)
    values = torch.empty(w.shape[0], run, m, dtype=torch.int64)
    for k, word, offset in _positions(bits):
        v = w[:, word] >> offset
        if offset + bits > _WORD_BITS:
            v = v | (w[:, word + 1] << (_WORD_BITS - offset))
        values[:, k] = v & max_code(bits)
    return values.reshape(-1, m).to(torch.int32)


def _check_quantized(qw: QuantizedWeight) -> None:
    maxq = max_code(qw.bits)
    n_groups = qw.scales.shape[0]
    if qw.codes.min() < 0 or qw.codes.max() > maxq or qw.zeros.min() < 0 or qw.zeros.max() > maxq:
        raise ValueError(f"codes and zeros must lie in [0, {maxq}] for {qw.bits} bits")
    if qw.g_idx.min() < 0 or qw.g_idx.max() >= n_groups:
        raise ValueError(f"g_idx must lie in [0, {n_groups})")
    if not torch.equal(qw.scales.half().float(), qw.scales.float()):
        raise ValueError("scales must be exactly representable in fp16 (the file stores fp16)")


def pack(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """The GPTQ v1 tensors {qweight, qzeros, scales, g_idx} of one quantized weight."""
    out_features, in_features = qw.shape
    shapes = packed_shapes(out_features, in_features, qw.bits, qw.group_size)
    if tuple(qw.scales.shape) != shapes["scales"][0]:
        raise ValueError(f"scales shape {tuple(qw.scales.shape)} != expected {shapes['scales'][0]}")
    _check_quantized(qw)
    stored_zeros = (qw.zeros.to(torch.int64) - 1) & max_code(qw.bits)
    return {
        "qweight": pack_rows(qw.codes.T, qw.bits),
        "qzeros": pack_rows(stored_zeros.T, qw.bits).T.contiguous(),
        "scales": qw.scales.to(torch.float16).contiguous(),
        "g_idx": qw.g_idx.to(torch.int32).contiguous(),
    }


def unpack(tensors: dict[str, torch.Tensor], bits: int, group_size: int, sym: bool = True) -> QuantizedWeight:
    """Inverse of pack. group_size as in the quantization config (-1 = per-channel)."""
    codes = unpack_rows(tensors["qweight"], bits).T.contiguous()
    out_features, in_features = codes.shape
    g = check_packable(out_features, in_features, bits, group_size)
    stored_zeros = unpack_rows(tensors["qzeros"].T.contiguous(), bits).T
    zeros = ((stored_zeros + 1) & max_code(bits)).contiguous()
    scales = tensors["scales"].float()
    expected = (in_features // g, out_features)
    if tuple(scales.shape) != expected or tuple(zeros.shape) != expected:
        raise ValueError(
            f"scales {tuple(scales.shape)} / qzeros {tuple(zeros.shape)} do not match "
            f"[n_groups, out] = {expected} for qweight of weight [{out_features}, {in_features}]"
        )
    g_idx = tensors["g_idx"].to(torch.int32)
    return QuantizedWeight(codes, scales, zeros, g_idx, bits, g, sym)
