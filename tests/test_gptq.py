import time

import pytest
import torch

from quantkit.quantize.gptq import (
    gptq_quantize,
    gptq_quantize_one,
    per_expert_reference,
    reconstruction_error,
)
from quantkit.formats.gptq.packing import pack, unpack
from quantkit.quantize.rtn import dequantize_codes, group_scale_zero, quantize_codes, quantize_rtn, quantize_rtn_experts


def _problem(n_mats: int, out_features: int, in_features: int, seed: int = 0):
    """Weights and Hessians 2/n X^T X from correlated inputs (low rank + noise) with outlier channels."""
    gen = torch.Generator().manual_seed(seed)
    n_tokens, rank = 4 * in_features, in_features // 4
    x = torch.randn(n_mats, n_tokens, rank, generator=gen) @ torch.randn(n_mats, rank, in_features, generator=gen)
    x = x / rank**0.5 + 0.1 * torch.randn(n_mats, n_tokens, in_features, generator=gen)
    x[:, :, :4] *= 20.0  # outlier channels
    hessian = 2.0 * x.transpose(1, 2) @ x / n_tokens
    weight = 0.02 * torch.randn(n_mats, out_features, in_features, generator=gen)
    return weight, hessian


def _rtn_dequant(weight, bits, group_size, sym):
    return torch.stack([qw.dequantize() for qw in quantize_rtn_experts(weight, bits, group_size, sym)])


def _textbook_gptq_codes(weight, hessian, bits, sym, damp=0.01):
    """Unblocked GPTQ on one matrix, per-channel: each column's error is pushed onto all later
    columns at once through the full upper Cholesky factor of H^-1 (no lazy batches, no bmm)."""
    w = weight.clone()
    h = hessian + damp * hessian.diagonal().mean() * torch.eye(hessian.shape[0])
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)
    scale, zero = group_scale_zero(w, bits, sym)
    codes = torch.empty_like(w)
    for i in range(w.shape[1]):
        codes[:, i] = quantize_codes(w[:, i], scale, zero, bits)
        err = (w[:, i] - dequantize_codes(codes[:, i], scale, zero)) / u[i, i]
        w[:, i:] -= err[:, None] * u[i, i:][None, :]
    return codes


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn(bits, sym, act_order):
    weight, hessian = _problem(2, 64, 128, seed=bits)
    result = gptq_quantize(weight, hessian, bits=bits, group_size=32, sym=sym, act_order=act_order)
    err_gptq = reconstruction_error(weight, result.dequantize(), hessian)
    err_rtn = reconstruction_error(weight, _rtn_dequant(weight, bits, 32, sym), hessian)
    assert (err_gptq < 0.5 * err_rtn).all(), (err_gptq, err_rtn)
    assert not result.rtn_fallback.any()


@pytest.mark.parametrize("act_order, static_groups", [(False, False), (True, False), (True, True)])
def test_batched_matches_per_expert_loop(act_order, static_groups):
    weight, hessian = _problem(4, 64, 128, seed=7)
    kwargs = dict(bits=3, group_size=32, sym=False, act_order=act_order, static_groups=static_groups, block_size=48)
    batched = gptq_quantize(weight, hessian, **kwargs)
    looped = per_expert_reference(weight, hessian, **kwargs)
    assert (batched.codes != looped.codes).float().mean() < 0.01
    assert torch.equal(batched.g_idx, looped.g_idx)
    err_b = reconstruction_error(weight, batched.dequantize(), hessian)
    err_l = reconstruction_error(weight, looped.dequantize(), hessian)
    torch.testing.assert_close(err_b, err_l, rtol=1e-2, atol=0)


@pytest.mark.parametrize("block_size", [16, 128])
def test_lazy_blocks_match_textbook_gptq(block_size):
    weight, hessian = _problem(1, 32, 128, seed=3)
    result = gptq_quantize(weight, hessian, bits=4, group_size=-1, sym=True, block_size=block_size)
    expected = _textbook_gptq_codes(weight[0], hessian[0], bits=4, sym=True)
    assert (result.codes[0].float() != expected).float().mean() < 0.01


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("static_groups", [False, True])
def test_act_order_round_trip_through_the_file_format(bits, static_groups):
    weight, hessian = _problem(2, 64, 128, seed=11)
    result = gptq_quantize(
        weight, hessian, bits=bits, group_size=32, sym=True, act_order=True, static_groups=static_groups
    )
    for qw in result.split():
        g_idx = qw.g_idx.long()
        assert torch.equal(torch.bincount(g_idx, minlength=4), torch.full((4,), 32))
        if static_groups:
            assert torch.equal(g_idx, torch.arange(128) // 32)
        else:
            assert not torch.equal(g_idx, torch.arange(128) // 32)  # the outlier channels lead
        back = unpack(pack(qw), bits, 32, sym=True)
        assert torch.equal(back.codes, qw.codes) and torch.equal(back.g_idx, qw.g_idx)
        assert torch.equal(back.dequantize(), qw.dequantize())


@pytest.mark.parametrize("act_order", [False, True])
def test_zero_hessian_expert_falls_back_to_rtn(act_order):
    weight, hessian = _problem(3, 64, 128, seed=5)
    hessian[1] = 0.0  # expert 1 received no calibration tokens
    kwargs = dict(bits=4, group_size=32, sym=False, act_order=act_order)
    result = gptq_quantize(weight, hessian, **kwargs)
    assert result.rtn_fallback.tolist() == [False, True, False]
    assert result.fallback_experts == [1]
    rtn = quantize_rtn(weight[1], 4, 32, sym=False)
    assert torch.equal(result[1].codes, rtn.codes)
    assert torch.equal(result[1].scales, rtn.scales)
    assert torch.equal(result[1].g_idx, rtn.g_idx)
    assert torch.isfinite(result.dequantize()).all()
    alone = gptq_quantize(weight[:1], hessian[:1], **kwargs)  # the other experts are unaffected
    assert (result.codes[0] != alone.codes[0]).float().mean() < 0.01


def test_dead_input_columns_are_zeroed():
    weight, hessian = _problem(2, 32, 64, seed=2)
    hessian[0, 5, :] = 0.0
    hessian[0, :, 5] = 0.0
    result = gptq_quantize(weight, hessian, bits=4, group_size=32, sym=True)
    deq = result.dequantize()
    assert torch.isfinite(deq).all()
    assert (deq[0, :, 5] == 0).all()
    assert not (deq[1, :, 5] == 0).all()


def test_failed_cholesky_retries_with_more_damping():
    weight, hessian = _problem(2, 32, 64, seed=4)
    u = torch.nn.functional.normalize(torch.randn(64), dim=0)
    hessian[1] = torch.eye(64) - 1.5 * torch.outer(u, u)  # eigenvalue -0.5: needs damp ~1 x mean diag
    result = gptq_quantize(weight, hessian, bits=4, group_size=32, sym=True, damp=0.01)
    torch.testing.assert_close(result.damp, torch.tensor([0.01, 1.0]))
    assert torch.isfinite(result.dequantize()).all()


def test_single_matrix_wrapper():
    weight, hessian = _problem(1, 32, 64, seed=6)
    qw = gptq_quantize_one(weight[0], hessian[0], bits=4, group_size=32, sym=True)
    assert torch.equal(qw.codes, gptq_quantize(weight, hessian, bits=4, group_size=32, sym=True)[0].codes)
    with pytest.warns(UserWarning, match="RTN"):
        fallback = gptq_quantize_one(weight[0], torch.zeros(64, 64), bits=4, group_size=32, sym=True)
    assert torch.equal(fallback.codes, quantize_rtn(weight[0], 4, 32).codes)


def test_reconstruction_error_is_the_trace():
    gen = torch.Generator().manual_seed(0)
    w, w_hat, x = (torch.randn(8, 16, generator=gen) for _ in range(3))
    h = x.T @ x
    expected = torch.trace((w - w_hat) @ h @ (w - w_hat).T)
    torch.testing.assert_close(reconstruction_error(w, w_hat, h), expected)


def test_invalid_inputs():
    weight, hessian = _problem(2, 32, 64)
    with pytest.raises(ValueError, match="does not match"):
        gptq_quantize(weight, hessian[:, :32, :32], bits=4, group_size=32, sym=True)
    with pytest.raises(ValueError, match="NaN"):
        gptq_quantize(weight * float("nan"), hessian, bits=4, group_size=32, sym=True)
    with pytest.raises(ValueError, match="damp"):
        gptq_quantize(weight, hessian, bits=4, group_size=32, sym=True, damp=0.0)
    with pytest.raises(ValueError, match="group_size"):
        gptq_quantize(weight, hessian, bits=4, group_size=48, sym=True)


def test_timing_batched_vs_loop():
    weight, hessian = _problem(8, 256, 512, seed=9)
    kwargs = dict(bits=4, group_size=128, sym=True)
    start = time.perf_counter()
    batched = gptq_quantize(weight, hessian, **kwargs)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    looped = per_expert_reference(weight, hessian, **kwargs)
    t_loop = time.perf_counter() - start
    print(f"\nGPTQ B=8 out=256 in=512 g128 4-bit, {torch.get_num_threads()} thread(s): "
          f"batched {t_batched:.3f}s, per-expert loop {t_loop:.3f}s, x{t_loop / t_batched:.1f}")
    assert (batched.codes != looped.codes).float().mean() < 0.01


def test_rows_sharing_a_hessian_solve_as_one_matrix():
    """[gate; up] (or q/k/v) stacked along the output rows with their shared Hessian give the codes of
    solving each alone: GPTQ treats rows independently, the pipeline relies on it (one factorisation)."""
    weight, hessian = _problem(2, 96, 128, seed=12)
    kwargs = dict(bits=4, group_size=32, sym=False)
    fused = gptq_quantize(weight, hessian, **kwargs)
    for rows in (slice(0, 32), slice(32, 96)):
        alone = gptq_quantize(weight[:, rows], hessian, **kwargs)
        for b in range(2):
            part = fused[b].rows(rows.start, rows.stop)
            assert (part.codes != alone[b].codes).float().mean() < 0.005
            assert torch.equal(part.g_idx, alone[b].g_idx)
            torch.testing.assert_close(part.dequantize(), alone[b].dequantize(), rtol=0, atol=0.05 * weight.std().item())


def test_error_feedback_form_equals_the_reference_update_in_float64():
    """The solver's one-Cholesky error-feedback form against GPTQ's U = chol(H^-1) form with lazy blocks
    and groups that start mid-block and run past a block: in float64 every code is the same."""
    weight, hessian = _problem(2, 48, 192, seed=13)
    w, h = weight.double(), hessian.double()
    for group, block in ((64, 64), (32, 48), (96, 64), (8, 40), (192, 24)):
        ours = gptq_quantize(w, h, bits=3, group_size=group, sym=False, block_size=block)
        for b in range(2):
            expected = _reference_gptq_codes(w[b], h[b], bits=3, sym=False, group=group, block=block)
            assert torch.equal(ours.codes[b], expected.to(torch.int32)), (group, block)


def _reference_gptq_codes(weight, hessian, bits, sym, group, block, damp=0.01):
    """GPTQ.fasterquant's loop (lazy blocks, groups from W at the block start) on U = chol(H^-1)."""
    w = weight.clone()
    h = hessian + damp * hessian.diagonal().mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    n = w.shape[1]
    codes = torch.empty_like(w)
    scale = zero = None
    for i1 in range(0, n, block):
        i2 = min(i1 + block, n)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % group == 0:
                scale, zero = group_scale_zero(w[:, col:col + group], bits, sym)
            q = quantize_codes(w1[:, i], scale, zero, bits)
            codes[:, col] = q
            err = (w1[:, i] - dequantize_codes(q, scale, zero)) / u[col, col]
            w1[:, i:] -= err[:, None] * u[col, col:i2][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    return codes
