"""Issue 3 acceptance: the layer-by-layer runner is the real model, every expert of both modalities
gets tokens from the default set, GPTQ beats RTN on held-out tokens, and missing data is handled."""
import json
from collections import defaultdict

import pytest
import torch

from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, open_model, quantize
from quantkit.calibrate.runner import LayerStream
from quantkit.calibrate.samples import DEFAULT_SET_DIR as DEFAULT
from quantkit.calibrate.store import META, CalibrationDir
from quantkit.errors import CalibrationError, UsageError
from quantkit.loader import dequantized_state_dict, load_source
from quantkit.reference.inputs import vl_inputs
from quantkit.manifest import MANIFEST


def _subset(tmp_path, name, keep):
    """A JSONL of the default set's samples for which keep(index, sample) holds, with absolute paths."""
    src = DEFAULT / "samples.jsonl"
    out = tmp_path / f"{name}.jsonl"
    lines = []
    for i, line in enumerate(src.read_text().splitlines()):
        s = json.loads(line)
        if not keep(i, s):
            continue
        for m in s["messages"]:
            for c in m["content"]:
                if c["type"] == "image":
                    c["image"] = str((DEFAULT / c["image"]).resolve())
                if c["type"] == "video":
                    c["video"] = [str((DEFAULT / f).resolve()) for f in c["video"]]
        lines.append(json.dumps(s))
    out.write_text("\n".join(lines) + "\n")
    return out


def _has_media(s):
    return any(c["type"] in ("image", "video") for m in s["messages"] for c in m["content"])


@pytest.fixture(scope="module")
def calib_default(tiny_vl, tmp_path_factory):
    out = tmp_path_factory.mktemp("calib") / "default"
    path, report = calibrate(CalibrateOptions(model=str(tiny_vl), out=out))
    return path, report


def test_streaming_runner_reproduces_the_full_model(tiny_vl):
    ckpt, adapter = open_model(tiny_vl)
    inputs = vl_inputs(tiny_vl)
    stream = LayerStream(ckpt, adapter)
    hidden = stream.run([inputs]).hidden[0]
    with torch.no_grad():
        ref = load_source(tiny_vl)(**inputs).logits
    got = stream.logits(hidden)
    assert (inputs["moe_mm_token_type_ids"] != 0).any()
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()


def test_every_expert_of_both_modalities_gets_tokens(tiny_vl, calib_default):
    path, report = calib_default
    _, adapter = open_model(tiny_vl)
    meta = json.loads((path / META).read_text())
    assert meta["samples"]["tokens"]["vision"] > 0 and meta["samples"]["tokens"]["text"] > 0
    assert len(report) == len(adapter.shape.moe_layers) * 2
    for key, r in report.items():
        assert r["experts"] == 8 and r["min"] > 0 and r["zero"] == [], (key, r)
    store = CalibrationDir(path)
    for n in adapter.shape.moe_layers:
        layer = store.layer(n)
        for modality in ("text", "vision"):
            counts = layer.routing[modality]["tokens_per_expert"]
            # top-k routing: every token of the modality reaches exactly k experts
            assert sum(counts) == layer.routing[modality]["tokens"] * adapter.shape.top_k
            for k in range(8):
                h, n_tok = layer.hessian(f"model.layers.{n}.mlp.experts.{k + (8 if modality == 'vision' else 0)}.down_proj")
                assert h is not None and n_tok > 0 and torch.isfinite(h).all()
                assert torch.allclose(h, h.T, atol=1e-5)


def test_calibration_for_another_model_is_refused(tiny_vl, calib_default, tmp_path):
    from quantkit.reference.tiny import build_tiny_vl
    other = build_tiny_vl(tmp_path / "other", seed=0)
    cfg = json.loads((other / "config.json").read_text())
    cfg["text_config"]["rms_norm_eps"] = 1e-6
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CalibrationError, match="recalibrate"):
        quantize(QuantizeOptions(model=str(other), out=tmp_path / "v", bits=4, calib=calib_default[0]))


def _group_errors(source_dir, variant, heldout: CalibrationDir, adapter):
    """‖(W − Ŵ)X‖² on held-out tokens, summed per module group (layer, role, projection)."""
    from quantkit.checkpoint import Checkpoint
    src = Checkpoint.open(source_dir)
    deq = dequantized_state_dict(variant)
    errors = defaultdict(float)
    manifest = json.loads((variant / MANIFEST).read_text())
    for name, t in manifest["tensors"].items():
        if t["scheme"] == "keep":
            continue
        module = name[: -len(".weight")]
        layer_idx = int(name.split(".")[2])
        h, n = heldout.layer(layer_idx).hessian(adapter.input_group(module))
        if h is None:
            continue
        dw = src.read(name).float() - deq[name]
        role = adapter.role_of(name)
        errors[(layer_idx, role.label, role.proj)] += float(torch.einsum("oi,ij,oj->", dw, h, dw)) * n
    return errors


@pytest.mark.parametrize("bits", [4, 2])
def test_gptq_beats_rtn_on_held_out_tokens(tiny_vl, tmp_path_factory, bits):
    tmp = tmp_path_factory.mktemp(f"heldout{bits}")
    train = _subset(tmp, "train", lambda i, s: i % 4 != 0)
    held = _subset(tmp, "held", lambda i, s: i % 4 == 0)
    cal_train, _ = calibrate(CalibrateOptions(model=str(tiny_vl), out=tmp / "ct", samples=str(train)))
    cal_held, _ = calibrate(CalibrateOptions(model=str(tiny_vl), out=tmp / "ch", samples=str(held), mode="routed"))
    gptq = quantize(QuantizeOptions(model=str(tiny_vl), out=tmp / "gptq", bits=bits, calib=cal_train))
    rtn = quantize(QuantizeOptions(model=str(tiny_vl), out=tmp / "rtn", bits=bits, method="rtn"))
    _, adapter = open_model(tiny_vl)
    store = CalibrationDir(cal_held)
    e_gptq = _group_errors(tiny_vl, gptq, store, adapter)
    e_rtn = _group_errors(tiny_vl, rtn, store, adapter)
    assert set(e_gptq) == set(e_rtn) and len(e_gptq) >= 10
    worse = {k: (e_gptq[k], e_rtn[k]) for k in e_gptq if not e_gptq[k] < e_rtn[k]}
    assert not worse, worse
    ratio = sum(e_gptq.values()) / sum(e_rtn.values())
    print(f"{bits}-bit: GPTQ/RTN held-out reconstruction error = {ratio:.3f}")
    assert ratio < 0.9


def test_text_only_calibration_leaves_vision_experts_to_a_documented_fallback(tiny_vl, tmp_path):
    text_only = _subset(tmp_path, "text", lambda i, s: not _has_media(s))
    cal, report = calibrate(CalibrateOptions(model=str(tiny_vl), out=tmp_path / "c", samples=str(text_only)))
    assert all(r["modality_tokens"] == 0 for r in report.values() if r["modality"] == "vision")
    logs = []
    v = quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "v", bits=4, calib=cal), log=logs.append)
    manifest = json.loads((v / MANIFEST).read_text())
    fallen = {f["tensor"] for f in manifest["fallbacks"]}
    vision_experts = {n for n, t in manifest["tensors"].items() if t["role"] == "routed_expert.vision"}
    assert fallen == vision_experts
    assert all("no vision tokens" in f["reason"] for f in manifest["fallbacks"])
    assert any("routed_expert.vision" in line and "RTN" in line for line in logs), logs
    state = dequantized_state_dict(v)
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_one_shot_sequential_gptq(tiny_vl, tmp_path):
    few = _subset(tmp_path, "few", lambda i, s: i % 10 == 0)
    v = quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "seq", bits=4, samples=str(few), sequential=True))
    manifest = json.loads((v / MANIFEST).read_text())
    assert manifest["calibration"]["sequential"] is True and manifest["method"] == ["gptq"]
    assert manifest["solver"]["matrices"] > 0
    with pytest.raises(UsageError, match="--sequential"):
        quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "x", bits=4, calib=tmp_path, sequential=True))


def test_text_moe_family_streams_and_quantizes(tiny_text, tmp_path):
    from transformers import AutoTokenizer
    ckpt, adapter = open_model(tiny_text)
    tok = AutoTokenizer.from_pretrained(str(tiny_text))
    inputs = dict(tok("Mixture-of-experts models route each token to a few experts.", return_tensors="pt"))
    stream = LayerStream(ckpt, adapter)
    got = stream.logits(stream.run([inputs]).hidden[0])
    with torch.no_grad():
        ref = load_source(tiny_text)(**inputs).logits
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()
    few = _subset(tmp_path, "few", lambda i, s: i % 5 == 0)
    v = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "t4", bits=4, samples=str(few)))
    manifest = json.loads((v / MANIFEST).read_text())
    assert manifest["calibration"]["samples"]["skipped_with_media"] > 0
    assert manifest["fallbacks"] == []
    assert all(t["scheme"].startswith("gptq-w4") for t in manifest["tensors"].values()
               if t["role"] == "routed_expert.text")


@pytest.mark.parametrize("width", [600, 1100, 1536])
def test_block_triangle_hessian_sums_equal_the_full_product(width):
    """Wide inputs accumulate only the upper block triangle of XᵀX; once mirrored the sums equal the
    plain product (also through hessian(), which mirrors on its own)."""
    from quantkit.calibrate.runner import LayerCalibration

    gen = torch.Generator().manual_seed(width)
    chunks = [torch.randn(n, width, generator=gen) for n in (7, 96, 1)]
    calib = LayerCalibration(0)
    for x in chunks:
        calib.add("k", x)
    calib.groups["g"] = "k"
    expected = sum(x.T @ x for x in chunks)
    h, n = calib.hessian("g")
    assert n == 104
    torch.testing.assert_close(h * n, expected, rtol=1e-5, atol=1e-3)
    assert torch.equal(calib.hessians["k"], calib.hessians["k"].T)


def test_calibration_records_the_mean_input_of_each_group(tmp_path):
    """The running sum of X is kept beside XᵀX (the allocator's MLP surrogate needs the mean input),
    saved under its own names and read back; a layer file without it (older calibrations) gives None."""
    from safetensors.torch import load_file, save_file

    from quantkit.calibrate.runner import LayerCalibration
    from quantkit.calibrate.store import SUM_PREFIX, save_layer

    gen = torch.Generator().manual_seed(1)
    chunks = [torch.randn(n, 24, generator=gen) + 3.0 for n in (5, 40)]
    calib = LayerCalibration(0, groups={"g": "k"}, routing={})
    for x in chunks:
        calib.add("k", x)
    expected = torch.cat(chunks).mean(0)
    torch.testing.assert_close(calib.mean("g"), expected)
    assert calib.mean("missing") is None
    record = save_layer(tmp_path, calib)
    saved = load_file(str(tmp_path / record["file"]))
    assert set(saved) == {"k", SUM_PREFIX + "k"}
    store = CalibrationDir.__new__(CalibrationDir)  # the store's reader, on this one layer
    store.path, store.meta = tmp_path, {"layers": {"0": {**record, "tokens": calib.tokens}}}
    back = store.layer(0)
    assert set(back.hessians) == {"k"}
    torch.testing.assert_close(back.mean("g"), expected)
    torch.testing.assert_close(back.hessian("g")[0], calib.hessian("g")[0])
    save_file({"k": saved["k"]}, str(tmp_path / record["file"]))  # as written before the sums
    assert store.layer(0).mean("g") is None and store.layer(0).hessian("g")[1] == 45
