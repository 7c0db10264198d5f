"""GPTQ (Frantar et al., 2022) batched over a stack of same-shaped matrices, e.g. the experts of a layer.

Follows the column loop of the reference IST-DASLab/gptq `gptq.py` `GPTQ.fasterquant` (the same
loop, group handling included, is in GPTQModel's `gptq.py`), reimplemented, not copied, in its
error-feedback form: the reference pushes column i's scaled error through the upper Cholesky factor
U of H^-1 (three O(in^3) factorisations: Cholesky, inverse, Cholesky). Algebraically the same codes
come from W' = W + (W - W_hat) A with A = U^-1 diag(U) - I, and U^-1 is the upper Cholesky factor R
of H itself (H = R R^T), so A needs one Cholesky of H in reversed order and no inverse (the
equivalence is Theorem 6 of Chee et al. 2023, "QuIP": OPTQ = LDLQ). At real ERNIE widths the
factorisations were most of the solve time; this cuts them by 4x. Codes equal the reference's up to
float rounding at exact ties (tests/test_gptq.py compares with a textbook GPTQ on U).

Every step runs on all B matrices at once: one batched Cholesky; per lazy block, one bmm bringing
in the errors of the finished blocks, then per column a [B, out] quantize + rank-1 update. The only
Python loop is over columns, as in the reference; none is over experts. The batch is shared out
between worker threads (one per intra-op thread the caller has), each running single-threaded
kernels on its experts (SOLVE_WORKERS: robust on a shared CPU, and the codes do not depend on the
thread count).

Behaviour kept from the reference:
- H is the layer-input Hessian 2/n X^T X of shape [in, in] per matrix;
- dead inputs (H[i, i] == 0, the column never saw a non-zero input): H[i, i] = 1 and W[:, i] = 0;
- damping: lambda = damp * mean(diag H) added to the diagonal;
- non-static groups take their scale/zero when the group's first column is reached, from W as it
  stands at the start of the current block (carrying the errors of the finished blocks, not the
  in-block ones: the reference reads W, not its working copy W1);
- act_order: columns in descending diag(H) order; groups are consecutive runs of that order, so
  g_idx[i] is not i // group_size; with static_groups the groups are fixed on the original column
  order before GPTQ runs (g_idx[i] = i // group_size) and only the processing order changes.
Additions:
- scale/zero conventions and fp16-rounded scales are those of `rtn.group_scale_zero`;
- an expert whose Hessian is all zero (it received no calibration tokens) gets the identity
  Hessian: with no off-diagonal terms nothing is propagated and GPTQ reduces to exactly RTN. It is
  reported in `GPTQResult.rtn_fallback`; its weights are not zeroed as dead columns would be;
- if a Cholesky factorisation fails (or yields non-finite values) for an expert, its damping is
  multiplied by 10 and retried, for that expert only; the fraction used is in `GPTQResult.damp`;
- argsort for act_order is stable, so ties (an identity Hessian) keep the original order;
- per-channel scales are taken after dead columns are zeroed (the reference takes them before).

Given-grid mode (`gptq_quantize_on_grid`): the caller fixes every group's grid beforehand, as a scale
and an offset per group (w' = scale * code - offset, codes 0..2**bits - 1), e.g. llama.cpp's Q2_K,
whose 16-weight groups take their scale and min from 4-bit codes against a per-256 fp16 d and dmin,
so no integer zero point describes them. GPTQ then only chooses the codes, with those static groups
(g_idx[i] = i // group_size, also under act-order). A zero scale (a group whose grid has one level)
takes code 0.
"""
from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from quantkit.quantize.rtn import dequantize_codes, group_scale_zero, max_code, quantize_codes, resolve_group_size
from quantkit.scheme import QuantizedWeight

_DAMP_GROWTH = 10.0
# Columns per in-block sub-block: rank-1 updates stay inside it (they stream [B, rest, out] through
# memory once per column), and a finished sub-block reaches the rest of the lazy block in one bmm.
SUB_BLOCK = 16
_DAMP_TRIES = 6
# Parallelism: the matrices of a batch are split between SOLVE_WORKERS Python threads (None: the
# caller's torch.get_num_threads()), each factorising and sweeping its share with ONE intra-op thread.
# Multi-threaded ops would instead run every one of the sweep's thousands of small per-column ops, and
# the LAPACK calls, in lock-step on all threads, and on a shared machine a descheduled thread stalls
# each of them: measured on the 2-core box at load ~3 (bench/README.md), 16 [1536, 2560] experts took
# 55-92 s to sweep on 2 threads and 4-6 s on 1; 16 Cholesky/inverse factors of 2560 took 168 s on 2
# threads and 8.8 s on 1. Each matrix is computed by the same single-threaded kernels whatever the
# batch, the split or the caller's thread count, so the codes equal those of one thread (the tests'
# OMP_NUM_THREADS=1) and no longer depend on the thread count.
SOLVE_WORKERS: int | None = None


@dataclass
class GPTQResult:
    """Quantized stack of B matrices [out, in]; index it (or split()) for per-matrix weights."""

    codes: torch.Tensor  # int32 [B, out, in]
    scales: torch.Tensor  # fp32 [B, n_groups, out], fp16-representable
    zeros: torch.Tensor  # int32 [B, n_groups, out]
    g_idx: torch.Tensor  # int32 [B, in]
    bits: int
    group_size: int  # the real group length
    sym: bool
    rtn_fallback: torch.Tensor  # bool [B]: all-zero Hessian (no calibration tokens), RTN used
    damp: torch.Tensor  # fp32 [B]: damping fraction of mean(diag H) that made Cholesky succeed

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, b: int) -> QuantizedWeight:
        return QuantizedWeight(
            self.codes[b], self.scales[b], self.zeros[b], self.g_idx[b], self.bits, self.group_size, self.sym
        )

    def split(self) -> list[QuantizedWeight]:
        return [self[b] for b in range(len(self))]

    def dequantize(self) -> torch.Tensor:
        """[B, out, in] fp32."""
        return torch.stack([qw.dequantize() for qw in self.split()])

    @property
    def fallback_experts(self) -> list[int]:
        return self.rtn_fallback.nonzero().flatten().tolist()

    @classmethod
    def cat(cls, results: list[GPTQResult]) -> GPTQResult:
        first = results[0]
        fields = ("codes", "scales", "zeros", "g_idx", "rtn_fallback", "damp")
        stacked = {name: torch.cat([getattr(r, name) for r in results]) for name in fields}
        return cls(bits=first.bits, group_size=first.group_size, sym=first.sym, **stacked)


def reconstruction_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """trace((W - W_hat) H (W - W_hat)^T), the layer-output error GPTQ minimises; batches over leading dims."""
    diff = (w - w_hat).float()
    return ((diff @ hessian.float()) * diff).sum(dim=(-2, -1))


def _checked_inputs(weight: torch.Tensor, hessian: torch.Tensor, damp: float, block_size: int):
    if weight.dim() != 3 or hessian.dim() != 3:
        raise ValueError(f"expected weight [B, out, in] and hessian [B, in, in], got "
                         f"{tuple(weight.shape)} and {tuple(hessian.shape)}")
    n_mats, _, in_features = weight.shape
    if tuple(hessian.shape) != (n_mats, in_features, in_features):
        raise ValueError(f"hessian shape {tuple(hessian.shape)} does not match weight {tuple(weight.shape)}")
    if not (_all_finite(weight) and _all_finite(hessian)):
        raise ValueError("weight or hessian holds NaN or inf")
    if damp <= 0:
        raise ValueError(f"damp must be > 0, got {damp}")
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    # No copies: the solver reads both and copies only where it changes them (dead columns, empty H).
    # fp32, or fp64 when the weights come in fp64 (tests compare with the reference update that way).
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    return weight.to(dtype), hessian.to(dtype)


def _all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf, in two reductions (isfinite(t).all() allocates a bool tensor of t's size)."""
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def _replace_empty_hessians(hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-zero Hessians become the identity (GPTQ then equals RTN); returns H and which ones were."""
    empty = (hessian.diagonal(dim1=1, dim2=2) == 0).all(dim=1)  # a PSD matrix with zero diagonal is 0
    if empty.any():
        hessian = hessian.clone()
        hessian[empty] = torch.eye(hessian.shape[-1], dtype=hessian.dtype)
    return hessian, empty


def _drop_dead_columns(weight: torch.Tensor, hessian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs that were always zero: their weights cannot matter on the calibration data (reference).
    H[i, i] = 1 and W[:, i] = 0 for them, on copies."""
    dead = hessian.diagonal(dim1=1, dim2=2) == 0
    if not dead.any():
        return weight, hessian
    hessian = hessian.clone()
    hessian.diagonal(dim1=1, dim2=2)[dead] = 1.0
    return weight.masked_fill(dead.unsqueeze(1), 0.0), hessian


def _column_order(hessian: torch.Tensor, act_order: bool) -> torch.Tensor:
    n_mats, in_features, _ = hessian.shape
    if act_order:
        return torch.argsort(hessian.diagonal(dim1=1, dim2=2), dim=1, descending=True, stable=True)
    return torch.arange(in_features).expand(n_mats, in_features)


def _permute(weight: torch.Tensor, hessian: torch.Tensor, perm: torch.Tensor):
    n_mats, out_features, in_features = weight.shape
    weight = torch.gather(weight, 2, perm.unsqueeze(1).expand(n_mats, out_features, in_features))
    hessian = torch.gather(hessian, 1, perm.unsqueeze(2).expand(n_mats, in_features, in_features))
    hessian = torch.gather(hessian, 2, perm.unsqueeze(1).expand(n_mats, in_features, in_features))
    return weight, hessian


def _feedback_factor(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ's error-feedback coefficients from ONE Cholesky per matrix, no inverse (module docstring).

    With H + lambda I = R R^T, R upper (the Cholesky factor of H with rows and columns reversed),
    returns At [B, in, in], strictly lower: At[k, i] = R[i, k] / R[k, k], the weight with which the
    rounding error of column i < k is added to column k. lambda = frac * mean(diag H); frac starts at
    damp, and matrices whose factorisation fails get frac * 10 and are retried alone.
    """
    n_mats = hessian.shape[0]
    mean_diag = hessian.diagonal(dim1=1, dim2=2).mean(dim=1)
    frac = torch.full((n_mats,), float(damp))
    factor = None
    todo = torch.ones(n_mats, dtype=torch.bool)
    for _ in range(_DAMP_TRIES):
        idx = todo.nonzero().flatten()
        everyone = len(idx) == n_mats
        damped = (hessian if everyone else hessian[idx]).flip(1, 2)  # a copy, in reversed order
        damped.diagonal(dim1=1, dim2=2).add_((frac[idx] * mean_diag[idx]).unsqueeze(1))
        lower, info = torch.linalg.cholesky_ex(damped)
        del damped
        ok = (info == 0) & torch.isfinite(lower.sum(dim=(1, 2)))
        # R = flip(L) is upper; At = R^T with row k divided by R[k, k], unit diagonal removed.
        at = lower.transpose(1, 2).flip(1, 2)  # R^T, lower
        del lower
        at /= at.diagonal(dim1=1, dim2=2).unsqueeze(2)
        at.diagonal(dim1=1, dim2=2).zero_()
        if everyone and ok.all():
            return at, frac
        if factor is None:
            factor = torch.empty_like(hessian)
        factor[idx[ok]] = at[ok]
        todo[idx[ok]] = False
        if not todo.any():
            return factor, frac
        frac[todo] *= _DAMP_GROWTH
    raise RuntimeError(
        f"Cholesky of the damped Hessian failed for matrices {todo.nonzero().flatten().tolist()} "
        f"even at damp {frac[todo].max().item():g} x mean(diag H)"
    )


def _static_group_params(weight: torch.Tensor, group: int, bits: int, sym: bool, signed: bool = False):
    """Scale/zero of every group from the (dead-zeroed) weight before GPTQ: [B, n_groups, out] each."""
    n_mats, out_features, in_features = weight.shape
    scale, zero = group_scale_zero(weight.reshape(n_mats, out_features, in_features // group, group), bits, sym,
                                   signed)
    return scale.transpose(1, 2).contiguous(), zero.transpose(1, 2).contiguous()


@contextmanager
def _torch_threads(n: int | None):
    """Run the block with `n` intra-op threads, then restore the caller's count."""
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _factor_and_solve(weight, hessian, damp, col_group, group, bits, sym, block_size, static_params,
                      given_grid=False, signed=False):
    """_feedback_factor + _solve on contiguous shares of the batch, one share per worker thread,
    every worker on one intra-op thread (see SOLVE_WORKERS). Returns codes, scales, zeros, damp used."""
    n_mats = weight.shape[0]
    workers = max(1, min(n_mats, SOLVE_WORKERS or torch.get_num_threads()))
    bounds = [(n_mats * k // workers, n_mats * (k + 1) // workers) for k in range(workers)]

    def run(a: int, b: int):
        feedback, damp_used = _feedback_factor(hessian[a:b], damp)
        static = None if static_params is None else tuple(t[a:b] for t in static_params)
        codes, scales, zeros = _solve(weight[a:b], feedback, col_group[a:b], group, bits, sym, block_size, static,
                                      given_grid, signed)
        return codes, scales, zeros, damp_used

    with _torch_threads(1):
        if workers == 1:
            parts = [run(0, n_mats)]
        else:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(lambda ab: run(*ab), bounds))
    return tuple(torch.cat([p[i] for p in parts]) for i in range(4))


def _solve(weight, feedback, col_group, group, bits, sym, block_size, static_params, given_grid=False, signed=False):
    """The GPTQ column sweep in error-feedback form on permuted weight [B, out, in] (read, not
    modified) and At from _feedback_factor. Returns codes [B, out, in] (uint8) in processing order and
    the per-group scales and zeros [B, n_groups, out]. With `given_grid`, static_params are
    (scales, offsets) of the caller's grid instead of (scales, zeros).

    Column k is quantized from w_k + sum_{i<k} d_i At[k, i], d_i = w_i - w_hat_i its predecessors'
    rounding errors. Left-looking lazy blocks: a block's columns first receive the errors of all
    finished blocks in one bmm (At[block, :i1] @ D[:i1]), then the in-block errors: one column at a
    time within a SUB_BLOCK, one bmm from a finished sub-block to the block's later columns.
    Everything is held transposed, [B, column, out], so a column is one contiguous row.
    """
    n_mats, out_features, in_features = weight.shape
    if static_params is None:
        scales = weight.new_zeros(n_mats, in_features // group, out_features)
        zeros = torch.zeros_like(scales)
    else:
        scales, zeros = static_params
    errors = weight.new_empty(n_mats, in_features, out_features)  # d_i, processed column -> row
    codes_t = torch.empty(n_mats, in_features, out_features, dtype=torch.uint8)
    mats = torch.arange(n_mats)
    shared_groups = bool((col_group == col_group[:1]).all())
    groups_of = col_group[0].tolist()
    product = weight.new_empty(n_mats, min(SUB_BLOCK, block_size), out_features)  # in-sub-block updates

    def group_source(c1: int, i1: int, i2: int, w_orig: torch.Tensor, corr: torch.Tensor | None) -> torch.Tensor:
        """Columns c1:c1+group as the reference's W holds them when its sweep is at block i1: each
        carries the errors of the columns before i1 pushed through GPTQ's update (the optimal
        compensation given those errors), which is not the partial sum of the error-feedback form.
        With J = i1:c2, D_F the errors before i1 and C_J = D_F At[J, F]^T (`corr`, the error-feedback
        correction so far), the reference's columns are W_J + C_J (I + A_JJ)^-1, A = At^T (module
        docstring; H = R R^T gives both). Returns [B, out, group]."""
        c2 = c1 + group
        if i1 == 0:
            return w_orig[:, c1:c2].transpose(1, 2) if c2 <= i2 else weight[:, :, c1:c2]
        c_in = corr[:, :min(c2, i2) - i1]
        if c2 > i2:  # a group that runs past this block (group not a multiple of block_size)
            c_in = torch.cat([c_in, torch.bmm(feedback[:, i2:c2, :i1], errors[:, :i1])], dim=1)
        eye = torch.eye(c2 - i1, dtype=weight.dtype)
        # the small inverse first, then one bmm for the group's rows (a triangular solve with [J, out]
        # right-hand sides runs far below matmul speed)
        inverse = torch.linalg.solve_triangular(feedback[:, i1:c2, i1:c2] + eye, eye.expand(len(c_in), -1, -1),
                                                upper=False, unitriangular=True)
        state = torch.bmm(inverse[:, c1 - i1:], c_in)  # [B, group, out]
        if c2 <= i2:
            return (w_orig[:, c1 - i1:c2 - i1] + state).transpose(1, 2)
        return weight[:, :, c1:c2] + state.transpose(1, 2)

    for i1 in range(0, in_features, block_size):
        i2 = min(i1 + block_size, in_features)
        # [B, block, out]; gathering the block's rows first makes the transpose an in-cache one (3x faster)
        w_orig = weight[:, :, i1:i2].contiguous().transpose(1, 2).contiguous()
        w_block = w_orig.clone()
        if i1:
            w_block.baddbmm_(feedback[:, i1:i2, :i1], errors[:, :i1])
        corr = w_block - w_orig if static_params is None and i1 else None
        a_block = feedback[:, i1:i2, i1:i2].transpose(1, 2).contiguous()  # [B, i, k] = At[k, i]
        for i in range(i2 - i1):
            col = i1 + i
            if static_params is None and col % group == 0:
                scales[:, col // group], zeros[:, col // group] = group_scale_zero(
                    group_source(col, i1, i2, w_orig, corr), bits, sym, signed)
            if shared_groups:
                scale, zero = scales[:, groups_of[col]], zeros[:, groups_of[col]]
            else:
                scale, zero = scales[mats, col_group[:, col]], zeros[mats, col_group[:, col]]
            w = w_block[:, i]
            if given_grid:
                q = grid_codes(w, scale, zero, bits)
                w_hat = scale * q - zero
            else:
                q = quantize_codes(w, scale, zero, bits)
                w_hat = dequantize_codes(q, scale, zero)
            codes_t[:, col] = q
            d = errors[:, col]
            torch.sub(w_orig[:, i], w_hat, out=d)
            sub_end = min(i - i % SUB_BLOCK + SUB_BLOCK, i2 - i1)
            rest = sub_end - i - 1
            if rest:  # rank-1 update within the sub-block only
                update = product[:, :rest]
                torch.mul(d.unsqueeze(1), a_block[:, i, i + 1:sub_end].unsqueeze(2), out=update)
                w_block[:, i + 1:sub_end].add_(update)
            elif sub_end < i2 - i1:  # sub-block done: its errors onto the block's later columns, one bmm
                s1 = sub_end - SUB_BLOCK
                w_block[:, sub_end:].baddbmm_(a_block[:, s1:sub_end, sub_end:].transpose(1, 2),
                                              errors[:, i1 + s1:i1 + sub_end])
    return codes_t.transpose(1, 2).contiguous(), scales, zeros


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    sym: bool,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
    static_groups: bool = False,
    signed: bool = False,
) -> GPTQResult:
    """GPTQ of B matrices weight [B, out, in] with their Hessians [B, in, in], all at once.

    group_size -1 is per-channel, otherwise it must divide in. Inputs are read, not modified (fp32, or
    fp64 if the weights are); working memory is about 2 B in^2 (reversed copy, factor) + 2 B out in
    (block copies, errors) values plus B out in bytes of codes: the pipeline sizes batches by it.
    """
    w, h = _checked_inputs(weight, hessian, damp, block_size)
    n_mats, _, in_features = w.shape
    group = resolve_group_size(group_size, in_features)

    h, rtn_fallback = _replace_empty_hessians(h)
    w, h = _drop_dead_columns(w, h)
    static_params = _static_group_params(w, group, bits, sym, signed) if static_groups else None
    perm = _column_order(h, act_order)
    if act_order:
        w, h = _permute(w, h, perm)
    # The group each processed column belongs to: static groups follow the original column index.
    position = perm if static_groups else torch.arange(in_features).expand(n_mats, in_features)
    col_group = position // group

    codes, scales, zeros, damp_used = _factor_and_solve(w, h, damp, col_group, group, bits, sym, block_size,
                                                        static_params, signed=signed)

    # Back to the original column order: processed column j is original column perm[:, j].
    if act_order:
        codes = torch.empty_like(codes).scatter_(2, perm.unsqueeze(1).expand_as(codes), codes)
    g_idx = torch.empty_like(perm).scatter_(1, perm, col_group)
    return GPTQResult(
        codes=codes.to(torch.int32),
        scales=scales,
        zeros=zeros.to(torch.int32),
        g_idx=g_idx.to(torch.int32),
        bits=bits,
        group_size=group,
        sym=sym,
        rtn_fallback=rtn_fallback,
        damp=damp_used,
    )


def grid_codes(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Nearest codes (fp32 integers) of x on the grid scale * code - offset (scale may be negative);
    code 0 where the scale is 0 (every code then gives the same value)."""
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    codes = torch.clamp(torch.round((x + offset) / safe), 0, max_code(bits))
    return torch.where(scale == 0, torch.zeros_like(codes), codes)


@dataclass
class GridResult:
    """Codes GPTQ chose on a given grid, for a stack of B matrices."""

    codes: torch.Tensor  # int32 [B, out, in]
    rtn_fallback: torch.Tensor  # bool [B]: all-zero Hessian, so the codes are round-to-nearest
    damp: torch.Tensor  # fp32 [B]

    @property
    def fallback_experts(self) -> list[int]:
        return self.rtn_fallback.nonzero().flatten().tolist()


def gptq_quantize_on_grid(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    scales: torch.Tensor,
    offsets: torch.Tensor,
    *,
    bits: int,
    group_size: int,
    damp: float = 0.01,
    block_size: int = 128,
    act_order: bool = False,
) -> GridResult:
    """GPTQ of weight [B, out, in] on a fixed grid: group g of row r (columns g*group_size ...) has
    w' = scales[b, g, r] * code - offsets[b, g, r], codes in [0, 2**bits - 1]. Only the codes are
    chosen; the grid is the caller's (module docstring)."""
    w, h = _checked_inputs(weight, hessian, damp, block_size)
    n_mats, out_features, in_features = w.shape
    group = resolve_group_size(group_size, in_features)
    want = (n_mats, in_features // group, out_features)
    if tuple(scales.shape) != want or tuple(offsets.shape) != want:
        raise ValueError(f"grid scales {tuple(scales.shape)} / offsets {tuple(offsets.shape)} must be [B, n_groups, out] = {want}")
    grid = (scales.to(torch.float32), offsets.to(torch.float32))
    h, rtn_fallback = _replace_empty_hessians(h)
    w, h = _drop_dead_columns(w, h)
    perm = _column_order(h, act_order)
    if act_order:
        w, h = _permute(w, h, perm)
    col_group = perm // group  # static groups: the original column index decides the group
    codes, _, _, damp_used = _factor_and_solve(w, h, damp, col_group, group, bits, True, block_size, grid,
                                               given_grid=True)
    codes = torch.empty_like(codes).scatter_(2, perm.unsqueeze(1).expand_as(codes), codes)
    return GridResult(codes=codes.to(torch.int32), rtn_fallback=rtn_fallback, damp=damp_used)


def gptq_quantize_one(weight: torch.Tensor, hessian: torch.Tensor, **kwargs) -> QuantizedWeight:
    """GPTQ of one matrix [out, in] with its Hessian [in, in]; keyword arguments as gptq_quantize.

    An all-zero Hessian falls back to RTN with a warning (gptq_quantize reports it as a flag).
    """
    result = gptq_quantize(weight.unsqueeze(0), hessian.unsqueeze(0), **kwargs)
    if result.rtn_fallback[0]:
        warnings.warn("all-zero Hessian (no calibration inputs): quantized with RTN instead of GPTQ")
    return result[0]


def per_expert_reference(weight: torch.Tensor, hessian: torch.Tensor, **kwargs) -> GPTQResult:
    """The same algorithm run one matrix at a time in a Python loop; a check on the batched path."""
    return GPTQResult.cat(
        [gptq_quantize(weight[b:b + 1], hessian[b:b + 1], **kwargs) for b in range(weight.shape[0])]
    )
