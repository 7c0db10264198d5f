"""Fixed GGML grids and GPTQ on them: the K-quants (Q2_K .. Q6_K) and Q4_1, whose grids GPTQ's own
per-group min/max rule does not produce.

Q2_K stores, per 256 weights of a row, an fp16 `d` and `dmin`, and per 16-weight group a 4-bit
scale code `sc` and min code `mn`: w = d*sc*q - dmin*mn, q in 0..3. So the grid is fixed first,
then GPTQ chooses the codes on it (static groups of 16, `gptq_quantize_on_grid`):

1. per 16-group, scale and min from llama.cpp's `make_qkx2_quants(16, 3, x, |x|, ..., -0.5, 0.1, 15,
   use_mad=true)` (ggml-quants.c, `quantize_row_q2_K_ref`): min/max, then 16 candidate scales with a
   weighted least-squares refit of scale and min each, keeping the smallest weighted absolute error;
2. per 256, d = max scale / 15 and dmin = max min / 15 rounded to fp16, sc = round(scale * 15 /
   max scale), mn likewise (4-bit);
3. codes: round-to-nearest on that grid (the "RTN in Q2_K layout" baseline, what llama.cpp's own
   reference quantizer ends with) or GPTQ on it.

Q3_K (w = d*(sc-32)*(q-4), 6-bit sc, q in 0..7) follows `quantize_row_q3_K_ref`: per 16-group a
signed scale from `make_q3_quants(16, 4, x, rmse=true)` (the level -4 sits on the largest-magnitude
weight, then a few rounds of coordinate descent on the x^2-weighted error), per 256 d = -max/32 in
fp16 and sc = clamp(round(scale / d), -32, 31) + 32. Q4_1 (w = d*q + m per 32) follows
`quantize_row_q4_1_ref`: d = (max - min) / 15 and m = min, both fp16.

Q4_K / Q5_K (w = d*sc*q - dmin*mn per 32, q in 0..15 / 0..31, 6-bit sc and mn) follow
`quantize_row_q4_K_ref` / `quantize_row_q5_K_ref`: per 32-group `make_qkx2_quants` with weights
sqrt(mean x^2) + |x| and squared error (Q4_K: 21 candidate scales from nmax - 1, Q5_K: 16 from
nmax - 0.5), then per 256 d = max scale / 63 and dmin = max min / 63 in fp16, codes rounded. Q6_K
(w = d*sc*(q - 32), q in 0..63, int8 sc per 16) follows `quantize_row_q6_K_ref`: per 16-group a signed
scale from `make_qx_quants(16, 32, x, rmse_type=1)` (level -32 on the largest |x|, then 18 nearby
scales, x^2-weighted), per 256 d = -max/128 in fp16 and sc = min(127, round(scale / d)).

All fits are vectorised over every group of every matrix (torch, fp32) and reproduce the loops of
the reference C functions, read, not copied.
"""
from __future__ import annotations

import torch

from ...quantize.gptq import gptq_quantize_on_grid, grid_codes
from .types import QK_K, QUANT_TYPES, BlockWeight


def _nearest(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x)  # half to even, as ggml's nearest_int


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _make_qkx2(x: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int,
               w: torch.Tensor | None = None, use_mad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and min (>= 0, subtracted) of each group x [..., n] under weights w (default |x|):
    weighted absolute error (`use_mad`, Q2_K) or squared error (Q4_K, Q5_K)."""
    w = x.abs() if w is None else w

    def cost(diff: torch.Tensor) -> torch.Tensor:
        return (w * (diff.abs() if use_mad else diff * diff)).sum(-1)

    sum_w, sum_x = w.sum(-1), (w * x).sum(-1)
    mn = x.amin(-1).clamp(max=0)
    mx = x.amax(-1)
    flat = mx == mn
    rng = torch.where(flat, torch.ones_like(mx), mx - mn)
    iscale = nmax / rng
    scale = 1 / iscale
    lv = _nearest(iscale.unsqueeze(-1) * (x - mn.unsqueeze(-1))).clamp(0, nmax)
    best = cost(scale.unsqueeze(-1) * lv + mn.unsqueeze(-1) - x)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * step + nmax) / rng
        la = _nearest(iscale.unsqueeze(-1) * (x - mn.unsqueeze(-1))).clamp(0, nmax)
        sum_l, sum_l2, sum_xl = (w * la).sum(-1), (w * la * la).sum(-1), (w * la * x).sum(-1)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = torch.where(ok, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        pos = this_min > 0
        this_scale = torch.where(pos, sum_xl / torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2)), this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        err = cost(this_scale.unsqueeze(-1) * la + this_min.unsqueeze(-1) - x)
        better = ok & ~flat & (err < best)
        best = torch.where(better, err, best)
        scale = torch.where(better, this_scale, scale)
        mn = torch.where(better, this_min, mn)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale, -mn


def _superblock_codes(values: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """values [..., 16] >= 0 per group of one 256 block -> (fp16 step, integer codes 0..levels)."""
    top = values.amax(-1)
    ok = top > 0
    safe = torch.where(ok, top, torch.ones_like(top))
    codes = _nearest(values * (levels / safe).unsqueeze(-1)).clamp(0, levels)
    step = torch.where(ok, _fp16(safe / levels), torch.zeros_like(top))
    return step, torch.where(ok.unsqueeze(-1), codes, torch.zeros_like(codes))


def fit_q2k(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Q2_K grid of weight [B, out, in]: d, dmin [B, out, in/256]; sc, mn [B, out, in/16] (int32)."""
    b, out_f, in_f = weight.shape
    x = weight.float().reshape(b, out_f, in_f // QK_K, 16, 16)
    scale, the_min = _make_qkx2(x, 3, -0.5, 0.1, 15)
    d, sc = _superblock_codes(scale.clamp(min=0), 15)
    dmin, mn = _superblock_codes(the_min, 15)
    return {"d": d, "m": dmin, "sc": sc.reshape(b, out_f, -1).to(torch.int32),
            "mn": mn.reshape(b, out_f, -1).to(torch.int32)}


def _make_q3(x: torch.Tensor, nmax: int = 4, tries: int = 5) -> torch.Tensor:
    """Signed scale of each group x [..., n] (level -nmax on the largest |x|), rmse-refined."""
    idx = x.abs().argmax(-1, keepdim=True)
    mx = torch.gather(x, -1, idx).squeeze(-1)
    zero = mx.abs() < 1e-15  # GROUP_MAX_EPS
    iscale = -nmax / torch.where(zero, torch.ones_like(mx), mx)
    lv = _nearest(iscale.unsqueeze(-1) * x).clamp(-nmax, nmax - 1)
    w = x * x
    sumlx = (w * x * lv).sum(-1)
    suml2 = (w * lv * lv).sum(-1)
    for _ in range(tries):
        changed = torch.zeros_like(zero)
        for i in range(x.shape[-1]):
            xi, wi, li = x[..., i], w[..., i], lv[..., i]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            pos = slx > 0
            new_l = _nearest(xi * sl2 / torch.where(pos, slx, torch.ones_like(slx))).clamp(-nmax, nmax - 1)
            slx2, sl22 = slx + wi * xi * new_l, sl2 + wi * new_l * new_l
            take = pos & (new_l != li) & (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
            lv[..., i] = torch.where(take, new_l, li)
            sumlx = torch.where(take, slx2, sumlx)
            suml2 = torch.where(take, sl22, suml2)
            changed |= take
        if not changed.any():
            break
    scale = sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2))
    return torch.where(zero | (suml2 <= 0), torch.zeros_like(scale), scale)


def fit_q3k(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Q3_K grid of weight [B, out, in]: d [B, out, in/256]; sc [B, out, in/16] in 0..63 (value sc - 32)."""
    b, out_f, in_f = weight.shape
    x = weight.float().reshape(b, out_f, in_f // QK_K, 16, 16)
    scales = _make_q3(x)
    idx = scales.abs().argmax(-1, keepdim=True)
    max_scale = torch.gather(scales, -1, idx).squeeze(-1)
    ok = max_scale != 0
    iscale = -32 / torch.where(ok, max_scale, torch.ones_like(max_scale))
    lv = _nearest(iscale.unsqueeze(-1) * scales).clamp(-32, 31) + 32
    sc = torch.where(ok.unsqueeze(-1), lv, torch.full_like(lv, 32))
    d = torch.where(ok, _fp16(1 / iscale), torch.zeros_like(max_scale))
    return {"d": d, "sc": sc.reshape(b, out_f, -1).to(torch.int32)}


def fit_q4_1(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Q4_1 grid of weight [B, out, in]: d, m [B, out, in/32] (fp16 values)."""
    b, out_f, in_f = weight.shape
    x = weight.float().reshape(b, out_f, in_f // 32, 32)
    lo, hi = x.amin(-1), x.amax(-1)
    return {"d": _fp16((hi - lo) / 15), "m": _fp16(lo)}


def _fit_q45k(weight: torch.Tensor, nmax: int, rmin: float, nstep: int) -> dict[str, torch.Tensor]:
    """Q4_K (nmax 15) / Q5_K (31) grid of weight [B, out, in]: d, dmin [B, out, in/256]; sc, mn
    [B, out, in/32] 6-bit codes."""
    b, out_f, in_f = weight.shape
    x = weight.float().reshape(b, out_f, in_f // QK_K, 8, 32)
    w = (x * x).mean(-1, keepdim=True).sqrt() + x.abs()
    scale, the_min = _make_qkx2(x, nmax, rmin, 0.1, nstep, w, use_mad=False)
    d, sc = _superblock_codes(scale.clamp(min=0), 63)
    dmin, mn = _superblock_codes(the_min, 63)
    return {"d": d, "m": dmin, "sc": sc.reshape(b, out_f, -1).to(torch.int32),
            "mn": mn.reshape(b, out_f, -1).to(torch.int32)}


def fit_q4k(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    return _fit_q45k(weight, 15, -1.0, 20)


def fit_q5k(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    return _fit_q45k(weight, 31, -0.5, 15)


def _make_qx(x: torch.Tensor, nmax: int) -> torch.Tensor:
    """Signed scale of each group x [..., n] (`make_qx_quants`, rmse_type 1: weights x^2): level -nmax on
    the largest |x|, then the best of 18 nearby inverse scales."""
    idx = x.abs().argmax(-1, keepdim=True)
    mx = torch.gather(x, -1, idx).squeeze(-1)
    zero = mx.abs() < 1e-15  # GROUP_MAX_EPS
    mx = torch.where(zero, torch.ones_like(mx), mx)
    w = x * x

    def sums(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lv = _nearest(iscale.unsqueeze(-1) * x).clamp(-nmax, nmax - 1)
        return (w * x * lv).sum(-1), (w * lv * lv).sum(-1)

    sumlx, suml2 = sums(-nmax / mx)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2)), torch.zeros_like(sumlx))
    best = scale * sumlx
    for step in [s for s in range(-9, 10) if s]:
        slx, sl2 = sums(-(nmax + 0.1 * step) / mx)
        take = (sl2 > 0) & (slx * slx > best * sl2)
        scale = torch.where(take, slx / torch.where(sl2 > 0, sl2, torch.ones_like(sl2)), scale)
        best = torch.where(take, scale * slx, best)
    return torch.where(zero, torch.zeros_like(scale), scale)


def fit_q6k(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Q6_K grid of weight [B, out, in]: d [B, out, in/256]; sc [B, out, in/16] int8 values."""
    b, out_f, in_f = weight.shape
    x = weight.float().reshape(b, out_f, in_f // QK_K, 16, 16)
    scales = _make_qx(x, 32)
    idx = scales.abs().argmax(-1, keepdim=True)
    max_scale = torch.gather(scales, -1, idx).squeeze(-1)
    ok = max_scale.abs() >= 1e-15
    iscale = -128 / torch.where(ok, max_scale, torch.ones_like(max_scale))
    sc = _nearest(iscale.unsqueeze(-1) * scales).clamp(max=127)
    sc = torch.where(ok.unsqueeze(-1), sc, torch.zeros_like(sc))
    d = torch.where(ok, _fp16(1 / iscale), torch.zeros_like(max_scale))
    return {"d": d, "sc": sc.reshape(b, out_f, -1).to(torch.int32)}


_FITS = {"Q2_K": fit_q2k, "Q3_K": fit_q3k, "Q4_K": fit_q4k, "Q5_K": fit_q5k, "Q6_K": fit_q6k, "Q4_1": fit_q4_1}


def fit_grid(weight: torch.Tensor, type_name: str) -> list[BlockWeight]:
    """The fixed grid of each matrix of weight [B, out, in] (codes not chosen yet: zeros)."""
    fields = _FITS[type_name](weight)
    out = []
    for i in range(weight.shape[0]):
        kw = {k: v[i].contiguous() for k, v in fields.items()}
        out.append(BlockWeight(type_name, torch.zeros(weight.shape[1:], dtype=torch.int32), **kw))
    return out


def _stacked_grid(grids: list[BlockWeight]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, offsets) [B, n_groups, out] as gptq_quantize_on_grid takes them."""
    pairs = [g.grid() for g in grids]
    return (torch.stack([s.T for s, _ in pairs]).contiguous(), torch.stack([o.T for _, o in pairs]).contiguous())


def rtn_on_grid(weight: torch.Tensor, type_name: str) -> list[BlockWeight]:
    """Round-to-nearest in the type's own layout: fitted grid, nearest codes."""
    t = QUANT_TYPES[type_name]
    grids = fit_grid(weight, type_name)
    for g, w in zip(grids, weight.float()):
        scale, offset = g.grid()
        x = w.reshape(w.shape[0], -1, t.group)
        g.codes = grid_codes(x, scale.unsqueeze(-1), offset.unsqueeze(-1), t.bits).reshape(w.shape).to(torch.int32)
    return grids


def gptq_on_grid(weight: torch.Tensor, hessian: torch.Tensor, type_name: str, *, act_order: bool = False,
                 damp: float = 0.01) -> tuple[list[BlockWeight], list[int]]:
    """GPTQ of weight [B, out, in] on the type's fitted grid; returns the weights and the matrices
    whose Hessian was all zero (no calibration tokens: their codes are round-to-nearest)."""
    t = QUANT_TYPES[type_name]
    grids = fit_grid(weight, type_name)
    scales, offsets = _stacked_grid(grids)
    res = gptq_quantize_on_grid(weight, hessian, scales, offsets, bits=t.bits, group_size=t.group,
                                damp=damp, act_order=act_order)
    for g, codes in zip(grids, res.codes):
        g.codes = codes.contiguous()
    return grids, res.fallback_experts
