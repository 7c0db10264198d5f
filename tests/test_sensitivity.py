"""The output-sensitivity pass of `quantkit calibrate` (calibrate/sensitivity.py): the layer-by-layer
backward pass gives the Fisher a full-model autograd pass gives, on the real classes; the calibration
directory records it; the allocator says when a calibration has none; bad input is one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quantkit.adapters.base import hidden_states
from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, make_plan, open_model
from quantkit.calibrate.runner import LayerStream
from quantkit.calibrate.sensitivity import (FILE, SEED, InputStore, output_fishers, pick_samples,
                                            text_predictions)
from quantkit.calibrate.store import META, CalibrationDir
from quantkit.errors import CalibrationError
from quantkit.loader import load_source
from quantkit.reference.inputs import vl_inputs


def _autograd_fisher(model_dir, inputs: dict, counted) -> dict[tuple, torch.Tensor]:
    """mean g gᵀ per (layer, modality) from one backward pass through the whole transformers model,
    the routed experts' outputs hooked, labels drawn as the sensitivity pass draws them."""
    ckpt, adapter = open_model(str(model_dir))
    runner = adapter.runner()
    model = load_source(model_dir).float().eval()
    sums: dict[tuple, list] = {}

    def watch(key):
        def hook(module, args, out):
            out = hidden_states(out)
            if out.shape[0]:
                def on_grad(g):
                    g = g.reshape(-1, g.shape[-1]).double()
                    acc = sums.setdefault(key, [0, 0])
                    acc[0], acc[1] = acc[0] + g.T @ g, acc[1] + g.shape[0]
                out.register_hook(on_grad)
        return hook

    for n, layer in enumerate(runner.decoder_layers(model)):
        for modality, _, experts in runner.moe_blocks(layer):
            experts.register_forward_hook(watch((n, modality)))
    logp = torch.log_softmax(model(**inputs).logits.float(), -1)[0, :-1]
    y = torch.multinomial(logp.detach().exp(), 1, generator=torch.Generator().manual_seed(SEED))
    ll = logp.gather(-1, y)[:, 0]
    (ll if counted is None else ll[counted]).sum().backward()
    return {k: s / c for k, (s, c) in sums.items()}


@pytest.mark.parametrize("which", ["tiny_vl", "tiny_text", "qwen3_vl"])
def test_layer_by_layer_backward_equals_full_model_autograd(which, request, tmp_path):
    if which == "qwen3_vl":  # DeepStack features added after layers (its runner's run_layer)
        from quantkit.reference.tiny_qwen3 import build_tiny_qwen3_vl_moe
        model_dir = build_tiny_qwen3_vl_moe(tmp_path / "qwen3-vl", seed=0)
    else:
        model_dir = request.getfixturevalue(which)
    ckpt, adapter = open_model(str(model_dir))
    if which != "tiny_text":
        inputs = vl_inputs(model_dir)
    else:
        inputs = {"input_ids": torch.randint(0, 200, (1, 24), generator=torch.Generator().manual_seed(0))}
    counted = text_predictions(inputs)
    if which != "tiny_text":  # picture positions are not counted, text positions are
        assert counted is not None and 0 < int(counted.sum()) < counted.numel()
    stream = LayerStream(ckpt, adapter)
    store = InputStore(tmp_path / "inputs", [0])
    result = stream.run([inputs], before_layer=store.save)
    d = adapter.shape.hidden_size
    ours = output_fishers(stream, store, result.hidden, [counted], rank=d)
    ref = _autograd_fisher(model_dir, inputs, counted)
    assert ref and {(n, m) for n, per in ours.items() for m in per} == set(ref)
    for (n, m), f in ref.items():
        got = ours[n][m]
        dense = (got.vectors.double() * got.values.double()) @ got.vectors.double().T
        assert got.trace == pytest.approx(float(f.trace()), rel=1e-3)
        torch.testing.assert_close(dense, f, rtol=1e-3, atol=1e-4 * float(f.abs().max()))


def test_pick_samples_is_seeded_and_keeps_the_budget():
    lengths = [100, 50, 300, 80, 120, 60]
    chosen = pick_samples(lengths, 250)
    assert chosen == pick_samples(lengths, 250) and chosen == sorted(chosen)
    assert sum(lengths[i] for i in chosen) <= 250
    assert pick_samples([500, 600], 10) and len(pick_samples([500, 600], 10)) == 1  # at least one sample


def test_calibration_records_the_sensitivity_and_allocation_uses_it(tiny_text, tmp_path):
    with_it, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=tmp_path / "with"))
    without, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=tmp_path / "without", sensitivity_tokens=0))
    meta = json.loads((with_it / META).read_text())["sensitivity"]
    assert (with_it / FILE).is_file() and not (without / FILE).exists()
    assert "sensitivity" not in json.loads((without / META).read_text())
    fishers = CalibrationDir(with_it).fishers()
    _, adapter = open_model(str(tiny_text))
    assert sorted(fishers) == list(adapter.shape.moe_layers) and meta["samples"] >= 1
    for per in fishers.values():
        for f in per.values():
            assert f.trace > 0 and f.tokens > 0 and (f.values[:-1] >= f.values[1:]).all()
            torch.testing.assert_close(f.vectors.T @ f.vectors, torch.eye(f.vectors.shape[1]), atol=1e-4, rtol=0)
            assert float(f.values.sum()) <= f.trace * (1 + 1e-4)
    size = make_plan(QuantizeOptions(model=str(tiny_text), out=Path("."), bits=3))[2].predicted_bytes
    lines = {}
    for name, calib in (("with", with_it), ("without", without)):
        plan = make_plan(QuantizeOptions(model=str(tiny_text), out=Path("."), calib=calib, target_size=size))[2]
        lines[name] = "\n".join(plan.allocation.lines())
        assert plan.predicted_bytes <= size
    assert "no output sensitivity" in lines["without"] and "no output sensitivity" not in lines["with"]


def test_a_damaged_sensitivity_file_is_one_clear_error(tiny_text, tmp_path):
    calib, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=tmp_path / "c"))
    (calib / FILE).write_bytes(b"not safetensors")
    with pytest.raises(CalibrationError, match="sensitivity.safetensors: unreadable .*recalibrate"):
        CalibrationDir(calib).fishers()


def test_negative_sensitivity_tokens_is_one_line(tiny_text, tmp_path):
    r = subprocess.run([sys.executable, "-m", "quantkit.cli", "calibrate", str(tiny_text), "--out", str(tmp_path / "c"),
                        "--sensitivity-tokens", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and "--sensitivity-tokens -1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "c").exists()


def test_gate_up_without_a_quantized_down_get_the_layers_mean_sensitivity(tiny_text, tmp_path):
    """When a profile keeps the experts' down_proj, gate/up errors cannot be carried through it: with a
    sensitivity they are weighted by the layer's mean Fisher per dimension (trace / d), so every unit's
    error stays on the same (KL) scale."""
    profile = tmp_path / "keep-down.yaml"
    profile.write_text("""name: keep-down
family: ernie45_moe
format: gptq
description: test profile, routed experts' down_proj kept
rules:
  - role: [router, router_bias, norm, embedding, lm_head]
    keep: true
  - role: routed_expert
    name: down_proj
    keep: true
  - role: routed_expert
    bits: 4
    group_size: 128
    method: gptq
  - role: [shared_expert, attention, dense_mlp]
    bits: 8
    group_size: 128
    method: gptq
""")
    with_it, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=tmp_path / "with"))
    without, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=tmp_path / "without", sensitivity_tokens=0))
    units = {}
    for name, calib in (("with", with_it), ("without", without)):
        plan = make_plan(QuantizeOptions(model=str(tiny_text), out=Path("."), calib=calib, profile=str(profile),
                                         target_size=10**12))[2]
        units[name] = {u.key: u for u in plan.allocation.units}
        assert all(e.role.proj in ("gate", "up") for u in plan.allocation.units for e in u.entries)
    fishers = CalibrationDir(with_it).fishers()
    for key, u in units["with"].items():
        f = fishers[u.entries[0].role.layer]["text"]
        expected = f.trace / f.vectors.shape[0]
        for a, b in zip(u.error, units["without"][key].error):
            assert a == pytest.approx(b * expected, rel=1e-4)


def test_head_gradients_in_chunks_equal_one_pass(monkeypatch):
    """The head runs a chunk of positions at a time (a real vocabulary's logits do not fit at once);
    the gradients and the seeded label draws are those of one pass over every position."""
    from quantkit.calibrate import sensitivity

    gen = torch.Generator().manual_seed(0)
    norm, head = torch.nn.LayerNorm(16), torch.nn.Linear(16, 50, bias=False)
    finals = [torch.randn(1, 23, 16, generator=gen), torch.randn(1, 9, 16, generator=gen)]
    counted = [torch.rand(22, generator=gen) > 0.3, None]
    whole = sensitivity.head_gradients(norm, head, finals, counted)
    monkeypatch.setattr(sensitivity, "HEAD_CHUNK", 4)
    chunked = sensitivity.head_gradients(norm, head, finals, counted)
    for a, b in zip(whole, chunked):
        assert a.shape == b.shape and a.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert (whole[0][0, -1] == 0).all()  # the last position predicts nothing
