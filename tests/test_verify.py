"""`quantkit verify`: variants broken on purpose must be refused with the exact rule that breaks, a
correct one must pass, and onnxruntime's MatMulNBits must reproduce every quantized tensor."""
import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from quantkit.api import QuantizeOptions, quantize
from quantkit.cli import main
from quantkit.errors import UsageError, VariantCorrupt
from quantkit.verify import verify
from quantkit.formats.gptq.integrity import VariantFiles, scan_tensors
from quantkit.formats.gptq.onnx_check import cross_check, stream_values
from quantkit.manifest import MANIFEST, file_checksums, read_manifest

pytest.importorskip("onnxruntime")

# Every tensor the tiny VL model quantizes: 2 MoE layers x 16 experts x 3, 2 shared experts x 3,
# 3 layers x 4 attention, 1 dense MLP x 3.
TINY_QUANTIZED_MODULES = 2 * 16 * 3 + 2 * 3 + 3 * 4 + 3

UNIFORM_W4 = """name: vllm-w4g32
family: ernie45_vl
rules:
  - role: [router, router_bias, norm, vision_tower, resampler, embedding, lm_head]
    keep: true
{extra}  - role: [routed_expert, shared_expert, attention, dense_mlp]
    bits: 4
    group_size: 32
    sym: true
    method: rtn
"""


def _quantize(src, out, **kw):
    return quantize(QuantizeOptions(model=str(src), out=out, method="rtn", max_shard_size="300KB", **kw))


@pytest.fixture(scope="module")
def tiny_remote(tmp_path_factory):
    """The tiny VL in the remote-code config flavour (what vLLM reads), with the remote-code files its
    auto_map names (stubs: only their presence matters to these checks)."""
    from quantkit.reference.tiny import REMOTE_AUTO_MAP, build_tiny_vl

    path = build_tiny_vl(tmp_path_factory.mktemp("models") / "tiny-vl-remote", seed=0, flavour="remote")
    for ref in REMOTE_AUTO_MAP.values():
        (path / f"{ref.rsplit('.', 1)[0]}.py").write_text("# remote code (stub for tests)\n")
    return path


@pytest.fixture(scope="module")
def good(tiny_remote, tmp_path_factory):
    """A correct 4-bit variant for vLLM: every quantized module 4-bit sym g32 (divides every width)."""
    d = tmp_path_factory.mktemp("variants")
    prof = d / "uniform.yaml"
    prof.write_text(UNIFORM_W4.format(extra=""))
    return _quantize(tiny_remote, d / "good", profile=str(prof))


# -- helpers that break a variant on purpose -------------------------------------------------------
def copy_variant(variant, tmp_path, name="broken"):
    d = tmp_path / name
    shutil.copytree(variant, d)
    return d


def refresh_checksums(d):
    """As if the writer itself had produced the broken files (checksums agree with them)."""
    m = read_manifest(d)
    m["files"] = file_checksums(d)
    (d / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def shard_of(d, name):
    return json.loads((d / "model.safetensors.index.json").read_text())["weight_map"][name]


def edit_shard(d, shard, fn):
    """fn(tensors dict) edits in place; renamed/added/removed names are reflected in the index."""
    path = d / shard
    tensors = load_file(path)
    before = set(tensors)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    index_path = d / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    for n in before - set(tensors):
        index["weight_map"].pop(n, None)
    for n in set(tensors) - before:
        index["weight_map"][n] = shard
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    index_path.write_text(json.dumps(index, indent=2) + "\n")


def edit_config(d, fn):
    cfg = json.loads((d / "config.json").read_text())
    fn(cfg)
    (d / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def failed_check(report, check_id):
    c = report.check(check_id)
    assert c is not None and c.status == "fail", (check_id, report.lines())
    return c


# -- the correct variant -------------------------------------------------------------------------
def test_correct_4bit_variant_is_servable_everywhere(good):
    report = verify(good)
    assert report.integrity_ok and report.check("integrity.kept_identical").status == "pass"
    for runtime in ("vllm", "transformers", "onnxruntime"):
        assert report.runtimes[runtime].servable, report.lines()
    assert report.servable
    assert report.onnx["tensors_checked"] == TINY_QUANTIZED_MODULES and report.onnx["max_err_over_bound"] < 1
    assert report.lines() == ["integrity: ok", "vllm: servable",
                              "  serve: vLLM >= 0.32 (gptq_marlin): vllm serve DIR --trust-remote-code",
                              "transformers: servable", "onnxruntime: servable"]
    form = json.loads(report.dumps())
    assert form["servable"] and form["runtimes"]["vllm"]["failed"] == []
    assert all(c["source"] for c in form["runtimes"]["vllm"]["checks"])  # every rule names its source
    assert "| vllm | yes |" in report.to_markdown()


# -- the acceptance list: each broken variant names its exact failure -------------------------------
def test_quantized_router_is_refused_for_vllm(good, tmp_path):
    from quantkit.formats.gptq.packing import pack
    from quantkit.quantize.rtn import quantize_rtn

    d = copy_variant(good, tmp_path)
    name = "model.layers.1.mlp.gate.weight"

    def quantize_router(t):
        w = t.pop(name).T.contiguous()  # stored [hidden, experts]; as a linear [experts, hidden]
        for part, v in pack(quantize_rtn(w, 4, 32, True)).items():
            t[f"model.layers.1.mlp.gate.{part}"] = v

    edit_shard(d, shard_of(d, name), quantize_router)
    refresh_checksums(d)
    report = verify(d, runtimes=("vllm",))
    c = failed_check(report, "vllm.router_unquantized")
    assert c.details[0].startswith("model.layers.1.mlp.gate (text router) is stored quantized")
    assert "KeyError" in c.summary
    assert "model.layers.1.mlp.gate.qweight: no vLLM parameter takes this name" in \
        failed_check(report, "vllm.key_names").details
    assert any("plan keeps it" in line for line in failed_check(report, "integrity.plan_coverage").details)
    assert not report.runtimes["vllm"].servable


def test_mixed_bits_in_a_fused_group(tiny_remote, tmp_path):
    prof = tmp_path / "mixed.yaml"
    prof.write_text(UNIFORM_W4.format(extra="  - name: 'layers\\.1\\.mlp\\.experts\\.3\\.up_proj'\n    bits: 8\n"
                                            "    group_size: 32\n"))
    v = _quantize(tiny_remote, tmp_path / "mixed", profile=str(prof), force=True)
    report = verify(v, runtimes=("vllm", "transformers"))
    c = failed_check(report, "vllm.fused_groups")
    assert c.details == ["language_model.model.layers.1.mlp.text_experts (layer 1 text experts) mixes "
                         "4-bit x23 (e.g. model.layers.1.mlp.experts.0.down_proj), "
                         "8-bit x1 (e.g. model.layers.1.mlp.experts.3.up_proj)"]
    assert not report.runtimes["vllm"].servable
    assert report.runtimes["transformers"].servable, report.lines()  # quantkit.load reads mixed widths


def test_experts_kept_in_float_next_to_quantized_ones(tiny_remote, tmp_path):
    prof = tmp_path / "kept.yaml"
    prof.write_text(UNIFORM_W4.format(extra="  - name: 'layers\\.2\\.mlp\\.experts\\.12\\.'\n    keep: true\n"))
    v = _quantize(tiny_remote, tmp_path / "kept", profile=str(prof))
    report = verify(v, runtimes=("vllm",))
    assert failed_check(report, "vllm.fused_groups").details == [
        "language_model.model.layers.2.mlp.vision_experts (layer 2 vision experts) mixes "
        "4-bit x21 (e.g. model.layers.2.mlp.experts.10.down_proj), float x3 (e.g. model.layers.2.mlp.experts.12.down_proj)"]
    assert report.integrity_ok  # the files are what the plan says; only vLLM cannot take it


def test_two_bit_experts_are_servable_with_humming(tiny_remote, tmp_path):
    """vLLM >= 0.34: GPTQ 2-bit asymmetric experts run on the Humming kernels with
    `--quantization humming`; the verdict names the version and the exact command."""
    v = _quantize(tiny_remote, tmp_path / "w2", bits=2, group_size=32)
    report = verify(v, runtimes=("vllm",))
    assert report.runtimes["vllm"].servable, report.lines()
    serve = report.runtimes["vllm"].serve
    assert serve.startswith("vLLM >= 0.34 (Humming kernels: base scheme 2-bit asym")
    assert serve.endswith("vllm serve DIR --trust-remote-code --quantization humming")
    assert report.lines()[-1] == f"  serve: {serve}"
    assert json.loads(report.dumps())["runtimes"]["vllm"]["serve"] == serve


def test_three_bit_experts_are_servable_and_least_proven(tiny_remote, tmp_path):
    v = _quantize(tiny_remote, tmp_path / "w3", bits=3, group_size=32)
    report = verify(v, runtimes=("vllm",), load=False)
    assert report.runtimes["vllm"].servable, report.lines()
    assert "least proven" in report.check("vllm.moe_bits").summary
    assert "3-bit is the width least proven end to end" in report.runtimes["vllm"].serve


def test_asymmetric_experts_under_a_symmetric_config_are_refused(tiny_remote, tmp_path):
    v = _quantize(tiny_remote, tmp_path / "w2", bits=2, group_size=32)
    d = copy_variant(v, tmp_path, "sym-config")

    def symmetric(cfg):
        q = cfg["quantization_config"]
        q["sym"] = True
        q["dynamic"] = {k: {kk: vv for kk, vv in o.items() if kk != "sym"} for k, o in q["dynamic"].items()}

    edit_config(d, symmetric)
    refresh_checksums(d)
    c = failed_check(verify(d, runtimes=("vllm",), load=False), "vllm.moe_sym")
    assert "asymmetric expert tensors" in c.details[0] and "vLLM resolves sym=true" in c.details[0]


def test_one_group_size_per_fused_moe_layer(tiny_remote, tmp_path):
    """On the Humming path (2-bit experts) the shipped w2 profile's g64 does not divide the vision experts'
    intermediate size (32): their down_proj falls back to g32, and one FusedMoE layer holds one group size."""
    v = _quantize(tiny_remote, tmp_path / "w2", bits=2)
    c = failed_check(verify(v, runtimes=("vllm",), load=False), "vllm.moe_group_size")
    assert c.details == [f"language_model.model.layers.{n}.mlp.vision_experts (layer {n} vision experts): group sizes "
                         "[32, 64] (e.g. gate/up vs down); one per FusedMoE layer" for n in (1, 2)]


def test_corrupted_qweight_fails_the_checksum(good, tmp_path):
    d = copy_variant(good, tmp_path)
    name = "model.layers.2.mlp.experts.4.down_proj.qweight"
    ref = scan_tensors(d)[0][name]
    with open(ref.file, "r+b") as f:  # flip bits inside the tensor's data, file size unchanged
        f.seek(ref.start + 8)
        byte = f.read(1)
        f.seek(ref.start + 8)
        f.write(bytes([byte[0] ^ 0x5A]))
    report = verify(d, runtimes=("vllm", "onnxruntime"))
    c = failed_check(report, "integrity.checksums")
    assert c.details == [f"{ref.file.name}: sha256 differs from the manifest (corrupted or modified)"]
    assert not report.integrity_ok and not report.servable
    assert all(not v.servable for v in report.runtimes.values())
    assert "integrity: FAILED" in report.lines()


def test_missing_shard(good, tmp_path):
    d = copy_variant(good, tmp_path)
    shard = shard_of(d, "model.layers.1.mlp.experts.0.gate_proj.qweight")
    (d / shard).unlink()
    report = verify(d)
    assert failed_check(report, "integrity.checksums").details == [f"{shard}: missing"]
    assert failed_check(report, "integrity.index").details == [f"shard {shard} listed in the index is missing"]
    for name, verdict in report.runtimes.items():
        assert not verdict.servable
        assert verdict.checks[0].status == "skip" and shard in verdict.checks[0].summary


def test_nan_scale(good, tmp_path):
    d = copy_variant(good, tmp_path)
    name = "model.layers.1.self_attn.k_proj.scales"

    def poison(t):
        t[name][0, 3] = float("nan")

    edit_shard(d, shard_of(d, name), poison)
    refresh_checksums(d)
    report = verify(d, runtimes=("onnxruntime",))
    assert failed_check(report, "integrity.finite_scales").details == [f"{name}: 1 non-finite scale(s)"]
    assert failed_check(report, "onnxruntime.cross_check").details[0].startswith("model.layers.1.self_attn.k_proj: "
                                                                                 "non-finite")
    assert not report.servable


def test_renamed_keys(good, tmp_path):
    d = copy_variant(good, tmp_path)
    old = "model.layers.2.mlp.experts.5.up_proj"

    def rename(t):
        for part in ("qweight", "qzeros", "scales", "g_idx"):
            t[f"model.layers.2.mlp.experts.5.w3.{part}"] = t.pop(f"{old}.{part}")

    edit_shard(d, shard_of(d, f"{old}.qweight"), rename)
    refresh_checksums(d)
    report = verify(d, runtimes=("vllm",))
    assert "model.layers.2.mlp.experts.5.w3.qweight: no vLLM parameter takes this name" in \
        failed_check(report, "vllm.key_names").details
    coverage = failed_check(report, "integrity.plan_coverage").details
    assert f"{old}.weight: the plan quantizes it (rtn-w4g32), but {old}.qweight is not stored" in coverage
    assert "model.layers.2.mlp.experts.5.w3: stored quantized but not in the plan (renamed or extra module)" in coverage


def test_kept_tensor_changed_and_source_missing(good, tmp_path):
    d = copy_variant(good, tmp_path)
    name = "model.layers.1.input_layernorm.weight"

    def nudge(t):
        t[name] = t[name] + 1e-3

    edit_shard(d, shard_of(d, name), nudge)
    refresh_checksums(d)
    report = verify(d, runtimes=())
    assert failed_check(report, "integrity.kept_identical").details == [f"{name}: bytes differ from the source"]
    # Without the source the check is skipped and says why; it is never reported as passed.
    m = read_manifest(d)
    m["source"]["id"] = str(tmp_path / "nowhere")
    (d / MANIFEST).write_text(json.dumps(m, indent=1))
    report = verify(d, runtimes=())
    c = report.check("integrity.kept_identical")
    assert c.status == "skip" and "cannot be opened" in c.summary and "--source" in c.summary
    assert report.lines()[0] == "integrity: ok (1 check skipped)"
    assert verify(d, runtimes=(), source=good).check("integrity.kept_identical").status == "fail"


# -- vLLM's `dynamic` and group sizes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def remote_w4(tiny_remote, tmp_path_factory):
    """The shipped w4 profile (4-bit experts, 8-bit attention/shared/dense) on the remote flavour."""
    return _quantize(tiny_remote, tmp_path_factory.mktemp("variants") / "w4", bits=4)


def test_dynamic_written_for_checkpoint_names_does_not_reach_vllm(remote_w4, tmp_path):
    # quantkit writes each rule under vLLM's module names too; strip those to get what a tool that
    # only knows the checkpoint names would write
    d = copy_variant(remote_w4, tmp_path)

    def checkpoint_names_only(cfg):
        dyn = cfg["quantization_config"]["dynamic"]
        cfg["quantization_config"]["dynamic"] = {k: v for k, v in dyn.items() if "language_model" not in k}

    edit_config(d, checkpoint_names_only)
    refresh_checksums(d)
    report = verify(d, runtimes=("vllm",))
    c = failed_check(report, "vllm.dynamic")
    qkv = [line for line in c.details if line.startswith("language_model.model.layers.0.self_attn.qkv_proj [q]")]
    assert qkv and "vLLM reads 4-bit" in qkv[0] and "the file holds 8-bit" in qkv[0]
    assert "matches the checkpoint name model.layers.0.self_attn.q_proj, not vLLM's" in qkv[0]
    # a group size that does not divide a narrow layer (shared experts' down_proj: in_features 64)
    assert any(line.startswith("language_model.model.layers.1.mlp.shared_experts.down_proj [down]: group_size 128")
               and "does not divide in_features 64" in line for line in c.details)
    assert report.failed_ids() == {"vllm.dynamic"}


def test_shipped_w4_profile_is_servable_by_vllm(remote_w4):
    report = verify(remote_w4, runtimes=("vllm", "transformers"), load=False)
    assert report.servable, report.lines()


def test_dynamic_naming_vllm_modules_passes(remote_w4, tmp_path):
    """The same variant with `dynamic` keys that also match vLLM's module names is servable."""
    d = copy_variant(remote_w4, tmp_path)

    def vllm_aware(cfg):
        dyn = {}
        for key, val in cfg["quantization_config"]["dynamic"].items():
            key = key.replace("^model\\.", "^(?:language_model\\.)?model\\.")
            key = re.sub(r"\\\.([qkv])_proj\$$", r"\\.(?:\1|qkv)_proj$", key)
            key = re.sub(r"\\\.(gate|up)_proj\$$", r"\\.(?:\1|gate_up)_proj$", key)
            dyn[key] = val
        cfg["quantization_config"]["dynamic"] = dyn

    edit_config(d, vllm_aware)
    refresh_checksums(d)
    report = verify(d, runtimes=("vllm", "transformers"), load=False)
    assert report.servable, report.lines()


def test_config_that_misreads_the_files_fails_transformers(good, tmp_path):
    d = copy_variant(good, tmp_path)
    edit_config(d, lambda cfg: cfg["quantization_config"].update(bits=8))
    refresh_checksums(d)
    report = verify(d, runtimes=("transformers",), load=False)
    c = failed_check(report, "transformers.schemes")
    assert "the config resolves 8-bit group 32, the files hold 4-bit group 32" in c.details[0]


def test_native_config_flavour_is_not_for_vllm(tiny_vl_w4):
    report = verify(tiny_vl_w4, runtimes=("vllm",))
    assert "transformers-native flavour" in failed_check(report, "vllm.config_flavour").details[0]


# -- the independent decoder -------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_onnxruntime_reproduces_every_quantized_tensor(bits, tiny_vl, tiny_vl_w4, tmp_path):
    variant = tiny_vl_w4 if bits == 4 else _quantize(tiny_vl, tmp_path / f"w{bits}", bits=bits)
    checks, stats = cross_check(VariantFiles(variant))
    assert [c.status for c in checks] == ["pass", "pass"], [c.line() for c in checks]
    assert stats["tensors_checked"] == TINY_QUANTIZED_MODULES and stats["not_checkable"] == 0
    assert str(bits) in stats["per_bits"]
    assert 0 < stats["max_abs_err"] < 1e-5 and stats["max_err_over_bound"] < 1
    print(f"w{bits}: {stats['tensors_checked']} tensors, max |onnxruntime - quantkit.load| = "
          f"{stats['max_abs_err']:.3g}, max err/bound = {stats['max_err_over_bound']:.3g}")


def test_three_bit_is_reported_not_checkable(tiny_vl, tmp_path):
    v = _quantize(tiny_vl, tmp_path / "w3", bits=3)
    report = verify(v, runtimes=("onnxruntime",))
    c = failed_check(report, "onnxruntime.checkable")
    assert len(c.details) == 96 and "3-bit: MatMulNBits (onnxruntime 1.32 CPU) takes 2, 4 and 8 bits" in c.details[0]
    assert report.check("onnxruntime.cross_check").status == "pass"  # the 4-bit attention etc. still match
    assert report.onnx["tensors_checked"] == TINY_QUANTIZED_MODULES - 96
    assert not report.runtimes["onnxruntime"].servable


def test_packing_bug_shared_by_writer_and_loader_is_caught(good, tmp_path, monkeypatch):
    """Codes written with the nibbles of every byte swapped, and a loader with the same bug: the round
    trip through quantkit agrees with itself, onnxruntime (which follows the format) does not."""
    import quantkit.formats.gptq.reader as loader  # the GPTQ reading quantkit.load uses

    def swap_nibbles(w: torch.Tensor) -> torch.Tensor:
        b = w.contiguous().view(torch.uint8)
        return ((b >> 4) | (b << 4)).view(torch.int32)

    d = copy_variant(good, tmp_path)
    for shard in sorted({p.name for p in d.glob("model-*.safetensors")}):
        edit_shard(d, shard, lambda t: t.update({n: swap_nibbles(v) for n, v in t.items() if n.endswith(".qweight")}))
    refresh_checksums(d)
    real_unpack = loader.unpack
    monkeypatch.setattr(loader, "unpack", lambda t, *a, **k: real_unpack({**t, "qweight": swap_nibbles(t["qweight"])},
                                                                          *a, **k))
    report = verify(d, runtimes=("transformers", "onnxruntime"), load=False)
    assert report.runtimes["transformers"].servable  # quantkit's own round trip cannot see it
    c = failed_check(report, "onnxruntime.cross_check")
    assert len(c.details) == TINY_QUANTIZED_MODULES and "a packing or decoding bug" in c.details[0]


def test_large_variant_path_matches_the_loader(good):
    """Above the size limit the weights come module by module; the numbers are the loader's."""
    checks, stats = cross_check(VariantFiles(good), loader_max_bytes=0)
    assert [c.status for c in checks] == ["pass", "pass"] and stats["tensors_checked"] == TINY_QUANTIZED_MODULES


def test_stream_decoder_follows_the_documented_bit_order():
    # formats.md: row i of word j sits at bit b * (i % (32/b)); symmetric 4-bit qzeros read 0x77777777
    word = np.array([[0x76543210]], dtype=np.uint32).view(np.int32)
    assert stream_values(word, 4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    # 3 bits: value 10 straddles words 0 and 1 (low 2 bits at bits 30-31 of word 0, high bit at bit 0 of word 1)
    words = np.array([[np.uint32(0b10 << 30).view(np.int32), 1, 0]], dtype=np.int32)
    vals = stream_values(words, 3)[0]
    assert vals[10] == 0b110 and vals.sum() == 0b110


# -- bad input and the command line ----------------------------------------------------------------
def test_not_a_variant(tiny_vl, tmp_path):
    with pytest.raises(VariantCorrupt, match="no quantkit.json; not a quantkit variant"):
        verify(tiny_vl)
    with pytest.raises(VariantCorrupt, match="not a directory"):
        verify(tmp_path / "nothing")
    with pytest.raises(UsageError, match="--runtime tensorrt"):
        verify(tiny_vl, runtimes=("tensorrt",))


def test_cli_exit_codes_and_json(good, tiny_vl_w4, tiny_vl):
    r = CliRunner().invoke(main, ["verify", str(good), "--runtime", "vllm"])
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        "integrity: ok", "vllm: servable", "  serve: vLLM >= 0.32 (gptq_marlin): vllm serve DIR --trust-remote-code"]
    r = CliRunner().invoke(main, ["verify", str(tiny_vl_w4), "--runtime", "vllm", "--runtime", "transformers",
                                  "--no-load"])
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    # the transformers-native config flavour: vLLM's ERNIE-VL code reads only the remote-code one
    assert lines[1] == "vllm: NOT servable" and lines[2].startswith("  vllm.config_flavour: ")
    assert lines[3] == "transformers: servable" and len(lines) == 4
    r = CliRunner().invoke(main, ["verify", str(tiny_vl_w4), "--runtime", "vllm", "--json"])
    form = json.loads(r.stdout)
    assert r.exit_code == 1 and form["runtimes"]["vllm"]["servable"] is False
    assert form["runtimes"]["vllm"]["failed"][0].startswith("vllm.config_flavour: ")
    r = CliRunner().invoke(main, ["verify", str(tiny_vl)])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [f"error: {tiny_vl}: no quantkit.json; not a "
                                                                  "quantkit variant"]
