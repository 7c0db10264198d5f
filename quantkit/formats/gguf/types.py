"""GGML tensor types for quantkit schemes: which scheme is which type, exactly; raw blocks; sizes.

A quantkit scheme (bits, group size, symmetry) maps to at most one GGML type, and only where the
type stores the very grid the scheme describes, so the codes GPTQ chose are the codes llama.cpp
multiplies (no requantization):

    scheme                 type   block (bytes / weights)   weight llama.cpp computes (fp32)
    8-bit g32 symmetric    Q8_0   fp16 d, 32 x int8 (34/32)  d * q,        q = code - 128
    4-bit g32 symmetric    Q4_0   fp16 d, 16 B nibbles (18/32) d * (q - 8), q = code
    4-bit g32 asymmetric   Q4_1   fp16 d, fp16 m, 16 B (20/32) d * q + m
    6-bit g16 sym, s8      Q6_K   256: 128 B low nibbles, 64 B high 2 bits, 16 int8 scales, fp16 d
                                  (210/256)                  d * sc * (q - 32)
    5-bit g32 asym, s6     Q5_K   256: fp16 d, fp16 dmin, 12 B 6-bit scale|min, 32 B high bits,
                                  128 B nibbles (176/256)    d * sc * q - dmin * mn
    4-bit g32 asym, s6     Q4_K   256: fp16 d, fp16 dmin, 12 B 6-bit scale|min, 128 B nibbles
                                  (144/256)                  d * sc * q - dmin * mn
    3-bit g16 sym, s6      Q3_K   256: 32 B high bits, 64 B low bits, 12 B 6-bit scales, fp16 d
                                  (110/256)                  d * (sc - 32) * (q - 4)
    2-bit g16 asym, s4     Q2_K   256: 16 B 4-bit scale|min, 64 B codes, fp16 d, fp16 dmin
                                  (84/256)                   d * sc * q - dmin * mn
(`sN`: the scheme's `scale_bits`, each group's scale and min an N-bit code against the per-256 d, dmin.)

Exactness (why each row is the same number in both places):
- GPTQ's symmetric grid is scale * (code - 2**(b-1)) with an fp16 scale (quantkit rounds scales to
  fp16 before choosing codes), i.e. Q8_0 / Q4_0 with d = scale. Products of an fp16 d (11-bit
  significand) with an integer below 2**8 need at most 19 bits, so every form below is exact in fp32.
- Q4_1 stores the min m in fp16. A GPTQ asymmetric group is scale * (code - zero) = scale * code -
  scale * zero, which is Q4_1 only where scale * zero is itself an fp16 number; `export-gguf` checks
  that per group and refuses otherwise. `quantize --format gguf` instead fixes the Q4_1 grid (fp16 d,
  fp16 m per 32) first and runs GPTQ on it (`q2k.py`).
- K-quants (Q2_K .. Q6_K) have 16- or 32-weight groups whose scale (and min) are small integer codes
  against a per-256 fp16 d (and dmin): no GPTQ file describes them, so they only come from quantize
  --format gguf, which fits that grid first and then runs GPTQ with those static groups. Q4_K and
  Q4_1 are both 4-bit g32 asymmetric; the scheme's `scale_bits` (6 for Q4_K) tells them apart.
Every type is written here as a grid `w = scale * code - offset` per group (`BlockWeight.grid`), with
the same fp32 operations llama.cpp's dequantization performs, so `BlockWeight.dequantize()` is the
weight llama.cpp uses, bit for bit (tests compare it with `gguf.quants.dequantize`).

Blocks run along the input dimension of a [out, in] weight (a GGUF row), so `in` must be a multiple
of the type's block (32, or 256 for K-quants). Kept tensors are F32 (routers, router bias, norms and
any other 1-D tensor: llama.cpp reads them as F32) or their source dtype (F32 / F16 / BF16).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ...errors import PlanRefused
from ...scheme import QuantizedWeight, QuantScheme

QK_K = 256


@dataclass(frozen=True)
class TypeSpec:
    name: str
    bits: int
    group: int  # weights sharing one scale (and offset)
    sym: bool
    fixed_grid: bool  # the grid is fitted before GPTQ (not GPTQ's own per-group min/max grid)
    scale_bits: int | None = None  # K-quants: bits of each group's scale (and min) code

    @property
    def ggml(self) -> GGMLQuantizationType:
        return GGMLQuantizationType[self.name]

    @property
    def block(self) -> int:
        return GGML_QUANT_SIZES[self.ggml][0]

    @property
    def block_bytes(self) -> int:
        return GGML_QUANT_SIZES[self.ggml][1]

    @property
    def label(self) -> str:
        codes = f", {self.scale_bits}-bit scale codes" if self.scale_bits else ""
        return f"{self.bits}-bit g{self.group} {'symmetric' if self.sym else 'asymmetric'}{codes}"

    @property
    def k_quant(self) -> bool:
        return self.scale_bits is not None


QUANT_TYPES: dict[str, TypeSpec] = {t.name: t for t in (
    TypeSpec("Q8_0", 8, 32, True, False),
    TypeSpec("Q4_0", 4, 32, True, False),
    TypeSpec("Q4_1", 4, 32, False, True),
    TypeSpec("Q6_K", 6, 16, True, True, 8),
    TypeSpec("Q5_K", 5, 32, False, True, 6),
    TypeSpec("Q4_K", 4, 32, False, True, 6),
    TypeSpec("Q3_K", 3, 16, True, True, 6),
    TypeSpec("Q2_K", 2, 16, False, True, 4),
)}
FLOAT_TYPES = ("F32", "F16", "BF16")
_FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
_SOURCE_FLOAT = {"F32": "F32", "F16": "F16", "BF16": "BF16"}  # safetensors dtype -> GGML type
# Roles llama.cpp reads as F32 whatever the source dtype (convert_hf_to_gguf does the same).
F32_ROLES = ("router", "router_bias", "norm")


def known_types_text() -> str:
    return ", ".join(f"{t.name} = {t.label}" for t in QUANT_TYPES.values())


def type_for_scheme(scheme: QuantScheme, where: str) -> TypeSpec:
    """The GGML type that holds `scheme` exactly, else a one-line PlanRefused naming `where`."""
    if scheme.group_size == -1:
        raise PlanRefused(f"{where}: per-channel {scheme.bits}-bit: no GGUF type holds it exactly "
                            f"(GGUF types: {known_types_text()})")
    shape = (scheme.bits, scheme.group_size, scheme.sym)
    for t in QUANT_TYPES.values():
        if (t.bits, t.group, t.sym, t.scale_bits) == (*shape, scheme.scale_bits):
            return t
    if scheme.scale_bits is None:  # plans and profiles before scale_bits named Q2_K / Q3_K by shape alone
        k_types = [t for t in QUANT_TYPES.values() if t.k_quant and (t.bits, t.group, t.sym) == shape]
        if len(k_types) == 1:
            return k_types[0]
    sym = "symmetric" if scheme.sym else "asymmetric"
    raise PlanRefused(f"{where}: {scheme.bits}-bit g{scheme.group_size} {sym}: no GGUF type holds it exactly "
                        f"(GGUF types: {known_types_text()})")


def scheme_for_type(name: str, method: str = "gptq", desc_act: bool = False) -> QuantScheme:
    t = QUANT_TYPES[name]
    return QuantScheme(bits=t.bits, group_size=t.group, sym=t.sym, method=method, desc_act=desc_act,
                       scale_bits=t.scale_bits)


def kept_type(role_kind: str, source_dtype: str, where: str) -> str:
    """GGML type of a tensor kept at source precision (value-identical)."""
    if role_kind in F32_ROLES:
        if source_dtype not in _SOURCE_FLOAT:
            raise PlanRefused(f"{where}: dtype {source_dtype} is not a float; llama.cpp reads it as F32")
        return "F32"
    try:
        return _SOURCE_FLOAT[source_dtype]
    except KeyError:
        raise PlanRefused(f"{where}: dtype {source_dtype} has no GGUF type (F32, F16, BF16)")


def check_rows(shape: tuple[int, ...], type_name: str, where: str) -> None:
    t = QUANT_TYPES.get(type_name)
    if t is None:
        return
    if len(shape) != 2 or shape[1] % t.block:
        raise PlanRefused(f"{where}: rows of {shape[-1]} weights; {type_name} needs rows that are a multiple of "
                            f"{t.block} (weight {list(shape)}); keep it or pick a type with {t.group}-weight blocks")


def gguf_tensor_type(info, role, scheme: QuantScheme | None) -> str:
    """The GGML type a plan gives one source tensor (`info`: name, shape, dtype), or a one-line
    QuantkitError: no type holds the scheme exactly, rows that are not whole blocks, a non-float."""
    where = f"tensor {info.name} ({role.label})"
    if scheme is None:
        kind = "norm" if len(info.shape) <= 1 else role.kind  # 1-D tensors (biases too) are F32 in llama.cpp
        return kept_type(kind, info.dtype, where)
    t = type_for_scheme(scheme, where)
    check_rows(tuple(info.shape), t.name, where)
    return t.name


def check_stacked_experts(entries) -> None:
    """llama.cpp stacks the routed experts of one layer and projection into one tensor of one type."""
    types: dict[tuple, dict[str, list[str]]] = {}
    for e in entries:
        if e.role.kind == "routed_expert":
            types.setdefault((e.role.layer, e.role.proj), {}).setdefault(e.storage, []).append(e.name)
    for (layer, proj), by_type in sorted(types.items()):
        if len(by_type) > 1:
            first = sorted(by_type.items())
            raise PlanRefused(f"layer {layer} routed experts ({proj}_proj) mix GGUF types "
                                f"{', '.join(f'{t} (e.g. {names[0]})' for t, names in first)}; llama.cpp stores a "
                                f"layer's experts as one stacked tensor (blk.{layer}.ffn_{proj}_exps) of one type")


def tensor_nbytes(shape: tuple[int, ...], type_name: str) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    if type_name in _FLOAT_BYTES:
        return n * _FLOAT_BYTES[type_name]
    t = QUANT_TYPES[type_name]
    if n % t.block:
        raise ValueError(f"{n} weights are not whole {type_name} blocks of {t.block}")
    return n // t.block * t.block_bytes


# -- quantized weights in GGML's terms ---------------------------------------------------------

@dataclass
class BlockWeight:
    """One [out, in] weight as a GGML type stores it.

    codes: int32 [out, in], 0 .. 2**bits - 1
    d:     fp32 [out, n] fp16 values: per 32-block (Q8_0, Q4_0, Q4_1), per 256 (K-quants)
    m:     fp32 [out, n] fp16 values: Q4_1's min per 32, the dmin per 256 of Q2_K, Q4_K, Q5_K; else None
    sc:    int32 [out, in / group]: K-quant scale codes: Q2_K 4-bit, Q3_K 6-bit (value sc - 32),
           Q4_K / Q5_K 6-bit, Q6_K int8 (-128..127); else None
    mn:    int32 [out, in / group]: min codes: Q2_K 4-bit, Q4_K / Q5_K 6-bit; else None
    """

    type: str
    codes: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor | None = None
    sc: torch.Tensor | None = None
    mn: torch.Tensor | None = None

    @property
    def spec(self) -> TypeSpec:
        return QUANT_TYPES[self.type]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    def rows(self, start: int, stop: int) -> "BlockWeight":
        """Output rows start:stop (every field is per row: a fused [gate; up] solve splits)."""
        def cut(t):
            return None if t is None else t[start:stop].contiguous()
        return BlockWeight(self.type, cut(self.codes), cut(self.d), cut(self.m), cut(self.sc), cut(self.mn))

    def grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, offset) per group, fp32 [out, in / group]: w = scale * code - offset, computed with
        the fp32 operations of llama.cpp's dequantization (see the module docstring)."""
        t = self.type
        d = self.d.float()
        if t in ("Q8_0", "Q4_0"):
            return d, d * float(2 ** (self.spec.bits - 1))
        if t == "Q4_1":
            return d, -self.m.float()
        per = QK_K // self.spec.group  # groups per 256 block
        dg = d.repeat_interleave(per, dim=1)
        if t in ("Q2_K", "Q4_K", "Q5_K"):
            return dg * self.sc.float(), self.m.float().repeat_interleave(per, dim=1) * self.mn.float()
        if t == "Q3_K":
            scale = dg * (self.sc.float() - 32)
            return scale, scale * 4
        if t == "Q6_K":
            scale = dg * self.sc.float()
            return scale, scale * 32
        raise ValueError(t)

    def dequantize(self) -> torch.Tensor:
        """fp32 [out, in]: llama.cpp's dequantization, operation for operation (so even the sign of a
        zero matches); equal in value to scale * code - offset of `grid()`."""
        g = self.spec.group
        scale, offset = (x.repeat_interleave(g, dim=1) for x in self.grid())
        codes = self.codes.float()
        if self.type in ("Q8_0", "Q4_0", "Q3_K", "Q6_K"):  # d * (q - zero), q - zero an exact small integer
            return scale * (codes - float(2 ** (self.spec.bits - 1)))
        if self.type == "Q4_1":
            return scale * codes + self.m.float().repeat_interleave(g, dim=1)
        return scale * codes - offset  # Q2_K, Q4_K, Q5_K: (d * sc) * q - dmin * mn

    def same_as(self, other: "BlockWeight") -> bool:
        """Bit-for-bit equality of codes and of every scale/min field."""
        def eq(a, b):
            return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        return self.type == other.type and all(eq(getattr(self, f), getattr(other, f))
                                               for f in ("codes", "d", "m", "sc", "mn"))


def check_gptq_grid(t: TypeSpec, where: str) -> None:
    """K-quant grids cannot come from a GPTQ result (fp16 per-group scales, integer zeros)."""
    if t.k_quant:
        raise PlanRefused(f"{where}: {t.label} is {t.name}, whose {t.group}-weight groups take their scale"
                            f"{' and min' if not t.sym else ''} from {t.scale_bits}-bit codes "
                            "against a per-256 fp16 d; a GPTQ file's fp16 per-group scales and integer zeros do not "
                            "describe that grid (quantize the source with --format gguf instead)")


def from_quantized(qw: QuantizedWeight, type_name: str, where: str) -> BlockWeight:
    """A GPTQ/RTN result (codes, fp16 scales, integer zeros) as the GGML type, without requantizing;
    a one-line PlanRefused naming `where` and the reason if the type cannot hold it exactly."""
    t = QUANT_TYPES[type_name]
    check_gptq_grid(t, where)
    out_f, in_f = qw.shape
    if (qw.bits, qw.group_size, qw.sym) != (t.bits, t.group, t.sym):
        raise PlanRefused(f"{where}: {qw.bits}-bit g{qw.group_size} {'symmetric' if qw.sym else 'asymmetric'} "
                            f"is not {t.name} ({t.label})")
    if in_f % t.block:
        raise PlanRefused(f"{where}: rows of {in_f} weights are not whole {t.name} blocks of {t.block}")
    if not torch.equal(qw.g_idx.long(), torch.arange(in_f) // t.group):
        raise PlanRefused(f"{where}: act-order g_idx puts columns of one group apart; GGUF blocks are "
                            f"{t.group} consecutive weights (re-quantize with static groups or without act-order)")
    scales = qw.scales.float().T.contiguous()  # [out, n_groups]
    zeros = qw.zeros.long().T
    if not torch.equal(scales.half().float(), scales):
        raise PlanRefused(f"{where}: scales are not fp16 numbers")
    if t.sym:
        bad = (zeros != 2 ** (t.bits - 1)).nonzero()
        if len(bad):
            r, g = bad[0].tolist()
            raise PlanRefused(f"{where}: row {r} group {g} has zero point {int(zeros[r, g])}, not "
                                f"{2 ** (t.bits - 1)}: {t.name} is symmetric")
        return BlockWeight(t.name, qw.codes.to(torch.int32).clone(), scales)
    m = -(scales * zeros.float())  # exact in fp32: an fp16 scale times an integer below 16
    bad = (m.half().float() != m) | ~torch.isfinite(m.half().float())
    if bad.any():
        r, g = bad.nonzero()[0].tolist()
        raise PlanRefused(f"{where}: row {r} group {g}: the min -scale*zero = {m[r, g].item():.9g} is not an fp16 "
                            f"number ({int(bad.sum())} of {bad.numel()} groups), and Q4_1 stores the min in fp16; "
                            "quantize the source with --format gguf (GPTQ on the Q4_1 grid) instead")
    return BlockWeight(t.name, qw.codes.to(torch.int32).clone(), scales, m)


# -- raw blocks ---------------------------------------------------------------------------------

def _f16_bytes(x: torch.Tensor) -> np.ndarray:
    """fp16 values [rows, n] -> uint8 [rows, n, 2], little-endian."""
    return x.float().numpy().astype(np.float16).view(np.uint8).reshape(*x.shape, 2)


def _f16_from(b: np.ndarray) -> torch.Tensor:
    """uint8 [..., 2] -> fp32 values of the fp16 numbers."""
    return torch.from_numpy(np.ascontiguousarray(b).view(np.float16)[..., 0].astype(np.float32))


def _pack_2bit_256(q: np.ndarray) -> np.ndarray:
    """codes [rows, nb, 256] of 0..3 -> [rows, nb, 64]: element h*128 + s*32 + l at byte h*32 + l, bits 2s."""
    r, nb, _ = q.shape
    q = q.reshape(r, nb, 2, 4, 32).astype(np.uint8)
    out = q[:, :, :, 0] | (q[:, :, :, 1] << 2) | (q[:, :, :, 2] << 4) | (q[:, :, :, 3] << 6)
    return out.reshape(r, nb, 64)


def _unpack_2bit_256(b: np.ndarray) -> np.ndarray:
    r, nb, _ = b.shape
    b = b.reshape(r, nb, 2, 1, 32)
    return ((b >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)) & 3).reshape(r, nb, 256)


def _pack_high_bits(bits: np.ndarray) -> np.ndarray:
    """bits [rows, nb, 256] of 0/1 -> [rows, nb, 32]: element b*32 + l at bit b of byte l (Q3_K's hmask,
    Q5_K's qh)."""
    r, nb, _ = bits.shape
    b = bits.reshape(r, nb, 8, 32).astype(np.uint8)
    out = np.zeros((r, nb, 32), dtype=np.uint8)
    for i in range(8):
        out |= b[:, :, i] << i
    return out


def _unpack_high_bits(b: np.ndarray) -> np.ndarray:
    r, nb, _ = b.shape
    return ((b[:, :, None, :] >> np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)) & 1).reshape(r, nb, 256)


def _pack_nibbles_64(q: np.ndarray) -> np.ndarray:
    """low nibbles of codes [rows, nb, 256] -> [rows, nb, 128]: per 64 weights, byte l holds element l
    (low nibble) and element l + 32 (high nibble): Q4_K's and Q5_K's qs."""
    r, nb, _ = q.shape
    q = (q & 15).reshape(r, nb, 4, 2, 32).astype(np.uint8)
    return (q[:, :, :, 0] | (q[:, :, :, 1] << 4)).reshape(r, nb, 128)


def _unpack_nibbles_64(b: np.ndarray) -> np.ndarray:
    r, nb, _ = b.shape
    b = b.reshape(r, nb, 4, 1, 32)
    return np.concatenate([b & 15, b >> 4], axis=3).reshape(r, nb, 256)


def _pack_scale_min_k4(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins [rows, nb, 8] -> the 12 bytes of Q4_K / Q5_K (get_scale_min_k4's inverse)."""
    if sc.min() < 0 or sc.max() > 63 or mn.min() < 0 or mn.max() > 63:
        raise ValueError("Q4_K / Q5_K scales and mins are 6-bit")
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    return np.concatenate([(sc[:, :, :4] & 63) | ((sc[:, :, 4:] >> 4) << 6),
                           (mn[:, :, :4] & 63) | ((mn[:, :, 4:] >> 4) << 6),
                           (sc[:, :, 4:] & 15) | ((mn[:, :, 4:] & 15) << 4)], axis=2)


def _unpack_scale_min_k4(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, mid, hi = b[:, :, 0:4], b[:, :, 4:8], b[:, :, 8:12]
    sc = np.concatenate([lo & 63, (hi & 15) | ((lo >> 6) << 4)], axis=2)
    mn = np.concatenate([mid & 63, (hi >> 4) | ((mid >> 6) << 4)], axis=2)
    return sc.astype(np.int32), mn.astype(np.int32)


def encode(w: BlockWeight) -> np.ndarray:
    """The GGML blocks of one weight: uint8 [out, in / block * block_bytes] (one GGUF row per row)."""
    t = w.spec
    out_f, in_f = w.shape
    if in_f % t.block:
        raise ValueError(f"rows of {in_f} are not whole {t.name} blocks")
    nb = in_f // t.block
    codes = w.codes.numpy().astype(np.int32)
    if codes.min() < 0 or codes.max() >= 2 ** t.bits:
        raise ValueError(f"{t.name} codes must lie in [0, {2 ** t.bits - 1}]")
    q = codes.reshape(out_f, nb, t.block)
    if t.name == "Q8_0":
        parts = [_f16_bytes(w.d), (q - 128).astype(np.int8).view(np.uint8)]
    elif t.name in ("Q4_0", "Q4_1"):
        qs = (q[:, :, :16] | (q[:, :, 16:] << 4)).astype(np.uint8)
        parts = [_f16_bytes(w.d)] + ([_f16_bytes(w.m)] if t.name == "Q4_1" else []) + [qs]
    elif t.name == "Q2_K":
        sc = w.sc.numpy().reshape(out_f, nb, 16)
        mn = w.mn.numpy().reshape(out_f, nb, 16)
        if sc.min() < 0 or sc.max() > 15 or mn.min() < 0 or mn.max() > 15:
            raise ValueError("Q2_K scales and mins are 4-bit")
        parts = [(sc | (mn << 4)).astype(np.uint8), _pack_2bit_256(q), _f16_bytes(w.d), _f16_bytes(w.m)]
    elif t.name == "Q3_K":
        sc = w.sc.numpy().reshape(out_f, nb, 16)
        if sc.min() < 0 or sc.max() > 63:
            raise ValueError("Q3_K scales are 6-bit")
        hmask = _pack_high_bits((q >> 2) & 1)
        low, high = (sc & 15).astype(np.uint8), (sc >> 4).astype(np.uint8)
        scales = np.zeros((out_f, nb, 12), dtype=np.uint8)
        scales[:, :, :8] = low[:, :, :8] | (low[:, :, 8:] << 4)
        for j in range(16):  # the high 2 bits of scale j: byte 8 + j % 4, bits 2 * (j // 4)
            scales[:, :, 8 + j % 4] |= high[:, :, j] << (2 * (j // 4))
        parts = [hmask, _pack_2bit_256(q & 3), scales, _f16_bytes(w.d)]
    elif t.name in ("Q4_K", "Q5_K"):
        scales = _pack_scale_min_k4(w.sc.numpy().reshape(out_f, nb, 8), w.mn.numpy().reshape(out_f, nb, 8))
        high = [_pack_high_bits(q >> 4)] if t.name == "Q5_K" else []
        parts = [_f16_bytes(w.d), _f16_bytes(w.m), scales, *high, _pack_nibbles_64(q)]
    elif t.name == "Q6_K":
        sc = w.sc.numpy().reshape(out_f, nb, 16)
        if sc.min() < -128 or sc.max() > 127:
            raise ValueError("Q6_K scales are int8")
        h = q.reshape(out_f, nb, 2, 4, 32).astype(np.uint8)  # [half, quarter k, l]: element half*128 + k*32 + l
        low, top = h & 15, h >> 4
        ql = np.concatenate([low[:, :, :, 0] | (low[:, :, :, 2] << 4), low[:, :, :, 1] | (low[:, :, :, 3] << 4)], axis=3)
        qh = top[:, :, :, 0] | (top[:, :, :, 1] << 2) | (top[:, :, :, 2] << 4) | (top[:, :, :, 3] << 6)
        parts = [ql.reshape(out_f, nb, 128), qh.reshape(out_f, nb, 64), sc.astype(np.int8).view(np.uint8),
                 _f16_bytes(w.d)]
    else:
        raise ValueError(t.name)
    blocks = np.concatenate(parts, axis=2)
    assert blocks.shape[2] == t.block_bytes, (t.name, blocks.shape)
    return blocks.reshape(out_f, nb * t.block_bytes)


def decode(raw: np.ndarray, type_name: str, shape: tuple[int, int]) -> BlockWeight:
    """Inverse of `encode`: raw blocks (any shape holding out * in / block blocks) -> BlockWeight."""
    t = QUANT_TYPES[type_name]
    out_f, in_f = shape
    nb = in_f // t.block
    b = np.ascontiguousarray(raw, dtype=np.uint8).reshape(out_f, nb, t.block_bytes)
    d = m = sc = mn = None
    if t.name == "Q8_0":
        d = _f16_from(b[:, :, 0:2])
        codes = b[:, :, 2:].view(np.int8).astype(np.int32) + 128
    elif t.name in ("Q4_0", "Q4_1"):
        d = _f16_from(b[:, :, 0:2])
        start = 2
        if t.name == "Q4_1":
            m = _f16_from(b[:, :, 2:4])
            start = 4
        qs = b[:, :, start:]
        codes = np.concatenate([qs & 15, qs >> 4], axis=2).astype(np.int32)
    elif t.name == "Q2_K":
        scales = b[:, :, 0:16]
        sc = torch.from_numpy((scales & 15).astype(np.int32).reshape(out_f, nb * 16))
        mn = torch.from_numpy((scales >> 4).astype(np.int32).reshape(out_f, nb * 16))
        codes = _unpack_2bit_256(b[:, :, 16:80]).astype(np.int32)
        d, m = _f16_from(b[:, :, 80:82]), _f16_from(b[:, :, 82:84])
    elif t.name == "Q3_K":
        hmask, qs, scales = b[:, :, 0:32], b[:, :, 32:96], b[:, :, 96:108]
        d = _f16_from(b[:, :, 108:110])
        codes = _unpack_2bit_256(qs).astype(np.int32) + 4 * _unpack_high_bits(hmask).astype(np.int32)
        lo = np.concatenate([scales[:, :, :8] & 15, scales[:, :, :8] >> 4], axis=2)
        hi = np.stack([(scales[:, :, 8 + j % 4] >> (2 * (j // 4))) & 3 for j in range(16)], axis=2)
        sc = torch.from_numpy((lo | (hi << 4)).astype(np.int32).reshape(out_f, nb * 16))
    elif t.name in ("Q4_K", "Q5_K"):
        d, m = _f16_from(b[:, :, 0:2]), _f16_from(b[:, :, 2:4])
        scs, mns = _unpack_scale_min_k4(b[:, :, 4:16])
        sc, mn = torch.from_numpy(scs.reshape(out_f, nb * 8)), torch.from_numpy(mns.reshape(out_f, nb * 8))
        codes = _unpack_nibbles_64(b[:, :, -128:]).astype(np.int32)
        if t.name == "Q5_K":
            codes += 16 * _unpack_high_bits(b[:, :, 16:48]).astype(np.int32)
    elif t.name == "Q6_K":
        ql = b[:, :, 0:128].reshape(out_f, nb, 2, 2, 32)  # [half, first/second 32 bytes, l]
        qh = b[:, :, 128:192].reshape(out_f, nb, 2, 1, 32)
        low = np.stack([ql[:, :, :, 0] & 15, ql[:, :, :, 1] & 15, ql[:, :, :, 0] >> 4, ql[:, :, :, 1] >> 4], axis=3)
        top = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 1, 4, 1)) & 3
        codes = (low | (top << 4)).astype(np.int32).reshape(out_f, nb, 256)
        sc = torch.from_numpy(b[:, :, 192:208].view(np.int8).astype(np.int32).reshape(out_f, nb * 16))
        d = _f16_from(b[:, :, 208:210])
    else:
        raise ValueError(t.name)
    return BlockWeight(t.name, torch.from_numpy(np.ascontiguousarray(codes).reshape(out_f, in_f)), d, m, sc, mn)


# -- float tensors --------------------------------------------------------------------------------

def float_array(t: torch.Tensor, type_name: str) -> np.ndarray:
    """A kept tensor as the array GGUFWriter stores: F32/F16 as such, BF16 as raw bytes (uint8, last
    dimension doubled, with raw_dtype BF16)."""
    if type_name == "F32":
        return t.to(torch.float32).contiguous().numpy()
    if type_name == "F16":
        return t.to(torch.float16).contiguous().numpy()
    if type_name == "BF16":
        u = t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().view(np.uint8)
        return u.reshape(*t.shape[:-1], t.shape[-1] * 2)
    raise ValueError(type_name)


def float_from_array(a: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if type_name == "F32":
        return torch.from_numpy(np.array(a, dtype=np.float32).reshape(shape))
    if type_name == "F16":
        return torch.from_numpy(np.array(a).view(np.float16).reshape(shape).astype(np.float32))
    if type_name == "BF16":
        raw = np.ascontiguousarray(a).view(np.uint8).view(np.int16).reshape(shape)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16)
    raise ValueError(type_name)
