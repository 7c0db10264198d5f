"""Issue 9: GGUF variants for llama.cpp, checked without llama.cpp (tests/test_llama_cpp.py runs it).

- raw blocks of every type decode, with the `gguf` package's own dequantizer, to exactly the weight
  quantkit computes, and read back to the same codes, scales and mins;
- the codes, scales and mins in a written .gguf are the ones GPTQ produced, bit for bit;
- the file's size is the plan's prediction; its hyper-parameters and vocabulary are what llama.cpp
  reads; kept tensors are bit-identical to the source;
- GPTQ on the Q2_K grid beats round-to-nearest in the same layout;
- refusals are one line, a non-zero exit and nothing written; export-gguf keeps GPTQ's codes or
  names the tensor it cannot convert.
"""
import json
import shutil

import gguf
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from quantkit.api import QuantizeOptions, make_plan, quantize
from quantkit.calibrate.store import CalibrationDir
from quantkit.cli import main
from quantkit.errors import PlanRefused, ProfileError
from quantkit.formats.gguf import reader as gguf_reader
from quantkit.formats.gguf.q2k import gptq_on_grid, rtn_on_grid
from quantkit.formats.gguf.types import QUANT_TYPES, BlockWeight, decode, encode, tensor_nbytes, type_for_scheme
from quantkit.formats.gguf.variant import gguf_file
from quantkit.formats.gguf.writer import predicted_file_bytes
from quantkit.loader import load, load_source
from quantkit.manifest import verify_files
from quantkit.profiles import load_profile
from quantkit.quantize.gptq import reconstruction_error
from quantkit.quantize.pipeline import LayerQuantizer
from quantkit.scheme import QuantScheme, parse_scheme_label
from quantkit.reference.tokenizer import CORPUS
from quantkit.manifest import read_manifest


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _random_block_weight(type_name, out_f, in_f, gen):
    t = QUANT_TYPES[type_name]
    nb = in_f // t.block
    codes = torch.randint(0, 2**t.bits, (out_f, in_f), generator=gen, dtype=torch.int32)
    d = ((torch.rand(out_f, nb, generator=gen) - 0.3) * 0.02).half().float()
    m = sc = mn = None
    if type_name == "Q4_1":
        m = (-torch.rand(out_f, nb, generator=gen) * 0.05).half().float()
    if type_name == "Q2_K":
        m = (torch.rand(out_f, nb, generator=gen) * 0.01).half().float()
        sc = torch.randint(0, 16, (out_f, in_f // 16), generator=gen, dtype=torch.int32)
        mn = torch.randint(0, 16, (out_f, in_f // 16), generator=gen, dtype=torch.int32)
    if type_name == "Q3_K":
        sc = torch.randint(0, 64, (out_f, in_f // 16), generator=gen, dtype=torch.int32)
    if type_name in ("Q4_K", "Q5_K"):
        m = (torch.rand(out_f, nb, generator=gen) * 0.01).half().float()
        sc = torch.randint(0, 64, (out_f, in_f // 32), generator=gen, dtype=torch.int32)
        mn = torch.randint(0, 64, (out_f, in_f // 32), generator=gen, dtype=torch.int32)
    if type_name == "Q6_K":
        sc = torch.randint(-128, 128, (out_f, in_f // 16), generator=gen, dtype=torch.int32)
    return BlockWeight(type_name, codes, d, m, sc, mn)


@pytest.mark.parametrize("type_name", list(QUANT_TYPES))
def test_blocks_decode_like_the_gguf_library_and_round_trip(type_name):
    w = _random_block_weight(type_name, 6, 512, torch.Generator().manual_seed(len(type_name)))
    raw = encode(w)
    assert raw.dtype == np.uint8 and raw.size == tensor_nbytes((6, 512), type_name)
    ref = gguf.quants.dequantize(raw, QUANT_TYPES[type_name].ggml)
    assert np.array_equal(ref.view(np.uint32), w.dequantize().numpy().view(np.uint32))  # bit for bit
    assert decode(raw, type_name, (6, 512)).same_as(w)
    scale, offset = w.grid()  # the grid GPTQ solves on is the same weight in value
    assert torch.equal(scale.repeat_interleave(w.spec.group, 1) * w.codes - offset.repeat_interleave(w.spec.group, 1),
                       w.dequantize())


def test_each_scheme_maps_to_one_type_or_a_clear_refusal():
    pairs = {(8, 32, True, None): "Q8_0", (4, 32, True, None): "Q4_0", (4, 32, False, None): "Q4_1",
             (6, 16, True, 8): "Q6_K", (5, 32, False, 6): "Q5_K", (4, 32, False, 6): "Q4_K",
             (3, 16, True, 6): "Q3_K", (2, 16, False, 4): "Q2_K",
             # plans and profiles before scale_bits: the one K-quant of that shape
             (3, 16, True, None): "Q3_K", (2, 16, False, None): "Q2_K"}
    for (bits, group, sym, scale_bits), name in pairs.items():
        scheme = QuantScheme(bits, group, sym, scale_bits=scale_bits)
        assert type_for_scheme(scheme, "t").name == name
        assert parse_scheme_label(scheme.label) == scheme  # labels name the scale codes (`-s6`)
    for bits, group, sym in ((4, 128, True), (8, 32, False), (2, 32, False), (3, 32, True)):
        with pytest.raises(PlanRefused, match=f"{bits}-bit g{group} .*no GGUF type holds it exactly"):
            type_for_scheme(QuantScheme(bits, group, sym), "tensor x")
    with pytest.raises(PlanRefused, match="no GGUF type holds it exactly"):
        type_for_scheme(QuantScheme(4, 32, True, scale_bits=6), "tensor x")
    with pytest.raises(PlanRefused, match="per-channel"):
        type_for_scheme(QuantScheme(4, -1, True), "tensor x")


def test_gguf_profiles(tmp_path):
    for bits, expert in ((8, "Q8_0"), (4, "Q4_K"), (3, "Q3_K"), (2, "Q2_K")):
        p = load_profile(f"ernie45-moe-gguf-w{bits}")
        from quantkit.roles import Role
        s = p.scheme_for("x", Role("routed_expert", 1, "text", 0, "up"))
        assert p.format == "gguf" and type_for_scheme(s, "x").name == expert
    bad = tmp_path / "bad.yaml"
    for body, message in (
        ("family: ernie45_moe\nrules:\n  - role: routed_expert\n    gguf_type: Q4_0\n", "needs `format: gguf`"),
        ("family: ernie45_moe\nformat: gguf\nrules:\n  - role: routed_expert\n    gguf_type: Q5_0\n", "unknown gguf_type"),
        ("family: ernie45_moe\nformat: gguf\nrules:\n  - role: routed_expert\n    gguf_type: Q4_0\n    group_size: 64\n",
         "Q4_0 is 4-bit g32"),
        ("family: ernie45_moe\nformat: ggml\nrules: []\n", "format 'ggml'"),
    ):
        bad.write_text(body)
        with pytest.raises(ProfileError, match=message):
            load_profile(bad)


@pytest.mark.parametrize("type_name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_grid_gptq_beats_rtn_on_layer_error(type_name):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1024, 64, generator=gen) @ torch.randn(2, 64, 256, generator=gen) / 8
    x[:, :, :4] *= 10
    h = 2 * x.transpose(1, 2) @ x / 1024
    w = 0.02 * torch.randn(2, 32, 256, generator=gen)
    rtn = torch.stack([q.dequantize() for q in rtn_on_grid(w, type_name)])
    gq, fallback = gptq_on_grid(w, h, type_name)
    assert fallback == []
    for r, g in zip(rtn_on_grid(w, type_name), gq):  # same fitted grid, other codes
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in ((r.d, g.d), (r.m, g.m), (r.sc, g.sc), (r.mn, g.mn)))
        assert not torch.equal(r.codes, g.codes)
    err_g = reconstruction_error(w, torch.stack([q.dequantize() for q in gq]), h)
    print(type_name, (err_g / reconstruction_error(w, rtn, h)).tolist())
    assert (err_g < 0.5 * reconstruction_error(w, rtn, h)).all()


# -- written variants ------------------------------------------------------------------------

def _options(tiny_text, tiny_text_gguf, name) -> QuantizeOptions:
    """The options `tiny_text_gguf` quantized variant `name` with (planning only)."""
    if name == "wk":
        return QuantizeOptions(model=str(tiny_text), out=tiny_text_gguf[name], profile=str(tiny_text_gguf["k_profile"]))
    return QuantizeOptions(model=str(tiny_text), out=tiny_text_gguf[name], bits=int(name[1]), format="gguf")


@pytest.mark.parametrize("name", ["w8", "w4", "w2", "wk"])
def test_file_size_is_the_plans_prediction(tiny_text, tiny_text_gguf, name):
    variant = tiny_text_gguf[name]
    m = read_manifest(variant)
    size = gguf_file(variant).stat().st_size
    ckpt, adapter, plan = make_plan(_options(tiny_text, tiny_text_gguf, name))
    assert size == m["gguf"]["predicted_file_bytes"] == predicted_file_bytes(ckpt.path, ckpt.config, adapter, plan,
                                                                             "tiny-text")
    reader = gguf_reader.open_reader(variant)
    assert sum(int(t.n_bytes) for t in reader.tensors) == plan.predicted_bytes == m["predicted_tensor_bytes"]
    assert m["format"] == "gguf" and verify_files(variant).ok


@pytest.mark.parametrize("name", ["w8", "w4", "w3", "w2", "wk"])
def test_codes_scales_and_mins_in_the_file_are_what_gptq_produced(tiny_text, tiny_text_gguf, name):
    variant = tiny_text_gguf[name]
    ckpt, adapter, plan = make_plan(_options(tiny_text, tiny_text_gguf, name))
    store = CalibrationDir(tiny_text_gguf["calib"])
    produced = {}
    q = LayerQuantizer(ckpt, plan, adapter)
    for n in range(adapter.shape.num_layers):
        q(n, store.layer(n), produced.update)
    in_file = gguf_reader.source_tensors(variant)
    quantized = [e for e in plan.entries if e.quantized]
    expected = {"w8": {"Q8_0"}, "w4": {"Q4_K", "Q8_0"}, "w3": {"Q3_K", "Q8_0"}, "w2": {"Q2_K", "Q4_0"},
                "wk": {"Q4_K", "Q5_K", "Q6_K", "Q8_0"}}[name]
    assert quantized and {e.storage for e in quantized} == expected
    for e in quantized:
        got, want = in_file[e.name], produced[e.name]
        assert isinstance(got, BlockWeight) and got.same_as(want), e.name
    assert q.fallbacks == []  # every expert had calibration tokens: these are GPTQ's codes, not RTN's


def test_hyper_parameters_vocabulary_and_kept_tensors(tiny_text, tiny_text_gguf):
    variant = tiny_text_gguf["w2"]
    r = gguf_reader.open_reader(variant)
    f = {k: v.contents() for k, v in r.fields.items()}
    cfg = json.loads((tiny_text / "config.json").read_text())
    arch = "ernie4_5-moe"
    assert f["general.architecture"] == arch
    expected = {"block_count": 3, "embedding_length": 256, "feed_forward_length": 512, "attention.head_count": 4,
                "attention.head_count_kv": 2, "expert_count": 8, "expert_used_count": 2,
                "expert_feed_forward_length": 256, "expert_shared_count": 2,
                "expert_shared_feed_forward_length": 512,  # 2 shared experts x 256: the shared tensors' width
                "leading_dense_block_count": 1, "interleave_moe_layer_step": 1, "context_length": 131072}
    for key, value in expected.items():
        assert f[f"{arch}.{key}"] == value, key
    assert f[f"{arch}.rope.freq_base"] == 500000.0
    tokens, types = f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]
    assert len(tokens) == cfg["vocab_size"] == 1088 and f["tokenizer.ggml.model"] == "llama"
    assert types.count(gguf.TokenType.BYTE) == 256 and tokens[tokens.index("<0x41>")] == "<0x41>"
    assert types[tokens.index("<think>")] == gguf.TokenType.CONTROL and tokens[-1].startswith("[PAD")
    ids = (f["tokenizer.ggml.bos_token_id"], f["tokenizer.ggml.eos_token_id"], f["tokenizer.ggml.eot_token_id"])
    assert ids == (1, 2, 15)
    assert f["tokenizer.ggml.add_bos_token"] is False and f["tokenizer.ggml.add_space_prefix"] is False
    assert f["tokenizer.chat_template"] == (tiny_text / "chat_template.jinja").read_text()
    # kept tensors: routers, router bias, norms F32 and equal to the source; experts stacked per layer
    src = load_source(tiny_text).state_dict()
    by_name = {t.name: t for t in r.tensors}
    assert by_name["blk.1.ffn_gate_inp.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert by_name["blk.1.ffn_down_exps.weight"].tensor_type == gguf.GGMLQuantizationType.Q2_K
    assert list(by_name["blk.1.ffn_down_exps.weight"].shape) == [256, 256, 8]  # ggml order: in, out, experts
    assert np.array_equal(by_name["blk.2.exp_probs_b.bias"].data,
                          src["model.layers.2.mlp.gate.moe_statics.e_score_correction_bias"].numpy().ravel())
    assert np.array_equal(by_name["blk.1.ffn_gate_inp.weight"].data, src["model.layers.1.mlp.gate.weight"].numpy())
    assert np.array_equal(by_name["output_norm.weight"].data, src["model.norm.weight"].numpy())
    assert np.array_equal(by_name["token_embd.weight"].data, src["model.embed_tokens.weight"].numpy())
    kinds = {rec["role"]: rec["gguf_type"] for rec in read_manifest(variant)["tensors"].values()}
    assert kinds["router.text"] == kinds["router_bias"] == kinds["norm"] == "F32"


def test_gptq_on_the_q2k_grid_beats_rtn_on_kl_to_the_source(tiny_text, tiny_text_gguf):
    from transformers import AutoTokenizer

    ids = torch.tensor([AutoTokenizer.from_pretrained(str(tiny_text))(" ".join(CORPUS[20:34])).input_ids[:96]])
    with torch.no_grad():
        ref = torch.log_softmax(load_source(tiny_text)(ids).logits[0].double(), -1)
        kls = {}
        for name in ("w8", "w4", "w2", "w2-rtn"):
            out = torch.log_softmax(load(tiny_text_gguf[name])(ids).logits[0].double(), -1)
            kls[name] = float((ref.exp() * (ref - out)).sum(-1).mean())
    print("\nmean KL to the source (transformers, 96 positions):", kls)
    assert kls["w8"] < kls["w4"] < kls["w2"] < kls["w2-rtn"]


# -- refusals and export ----------------------------------------------------------------------

def test_refusals_are_one_line_and_write_nothing(tiny_vl, tiny_text, tmp_path):
    code, _, err = run("quantize", tiny_vl, "--bits", 4, "--format", "gguf", "--out", tmp_path / "a")
    one_line_error(code, err, "llama.cpp has no ERNIE-4.5-VL architecture")
    code, _, err = run("quantize", tiny_text, "--bits", 4, "--group-size", 128, "--format", "gguf", "--method", "rtn",
                       "--out", tmp_path / "b")
    one_line_error(code, err, "tensor model.layers.", "g128 symmetric: no GGUF type holds it exactly")
    code, _, err = run("quantize", tiny_text, "--bits", 8, "--profile", "ernie45-moe-gguf-w4", "--group-size", -1,
                       "--method", "rtn", "--out", tmp_path / "c")
    one_line_error(code, err, "per-channel")
    no_tok = tmp_path / "no-tok"
    shutil.copytree(tiny_text, no_tok)
    (no_tok / "tokenizer.model").unlink()
    code, _, err = run("quantize", no_tok, "--bits", 2, "--format", "gguf", "--method", "rtn", "--out", tmp_path / "d")
    one_line_error(code, err, "no tokenizer.model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no-tok"]


def test_export_gguf_keeps_gptq_codes_or_names_the_tensor(tiny_text, tmp_path):
    g32 = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "v4", bits=4, group_size=32, method="rtn"))
    code, out, err = run("export-gguf", g32, "--out", tmp_path / "v4-gguf")
    assert code == 0, err
    from quantkit.loader import dequantized_state_dict
    from quantkit.formats.gptq.packing import unpack
    from quantkit.checkpoint import Checkpoint

    exported = gguf_reader.source_tensors(tmp_path / "v4-gguf")
    ckpt = Checkpoint.open(g32)
    n = 0
    for name, v in exported.items():
        if isinstance(v, BlockWeight):
            module = name[: -len(".weight")]
            bits = 4 if ".experts." in name else 8
            qw = unpack({p: ckpt.read(f"{module}.{p}") for p in ("qweight", "qzeros", "scales", "g_idx")}, bits, 32)
            assert torch.equal(v.codes, qw.codes) and torch.equal(v.d, qw.scales.T), name  # not requantized
            n += 1
    assert n == 69
    state = dequantized_state_dict(g32)
    assert all(torch.equal(gguf_reader.dequantized_state_dict(tmp_path / "v4-gguf")[k], state[k].float()) for k in state)
    m = read_manifest(tmp_path / "v4-gguf")
    assert m["exported_from"]["format"] == "gptq" and m["source"]["id"] == str(tiny_text)
    assert gguf_file(tmp_path / "v4-gguf").name == "tiny-text-Q4_0.gguf"
    # the shipped 4-bit profile's g128 layers have no GGUF type: refused, naming the tensor
    g128 = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "v128", bits=4, method="rtn"))
    code, _, err = run("export-gguf", g128, "--out", tmp_path / "x")
    one_line_error(code, err, "tensor model.layers.", "g128 symmetric: no GGUF type holds it exactly")
    assert not (tmp_path / "x").exists()
    # asymmetric 4-bit g32: Q4_1 only where every min -scale*zero is an fp16 number
    asym = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "va", profile="ernie45-moe-w2", bits=4,
                                    group_size=32, method="rtn"))
    code, _, err = run("export-gguf", asym, "--out", tmp_path / "y")
    one_line_error(code, err, "is not an fp16 number", "Q4_1 stores the min in fp16")
    assert not (tmp_path / "y").exists()


def test_card_memory_and_the_real_21b_sizes(tiny_text_gguf, tmp_path):
    from quantkit.formats.gguf.memory import LlamaShape, file_bytes, llama_cpp_ram, real_21b_table
    from quantkit.publish import PackageOptions, package

    variant = tmp_path / "w4"
    shutil.copytree(tiny_text_gguf["w4"], variant)
    r = package(PackageOptions(variant=variant, base_model="baidu/ERNIE-4.5-21B-A3B-PT", license="apache-2.0",
                               run_verify=False))
    card = r.card.read_text()
    assert r.name.suffix == "GGUF-Q4_K" and "gguf" in r.metadata["tags"] and r.metadata["library_name"] == "gguf"
    assert "llama-server -m tiny-text-Q4_K.gguf" in card and "4-bit (Q4_K)" in card and verify_files(variant).ok
    assert "`--no-repack`" in card  # llama.cpp's AMX path crashes on MoE models (formats/gguf/engine.py)
    mem = file_bytes(variant)
    assert mem["file_bytes"] == gguf_file(variant).stat().st_size
    assert sum(row["bytes"] for row in mem["by_role"].values()) == mem["tensor_bytes"]
    assert mem["by_role"]["routed_expert.text"]["types"] == ["Q4_K"] and mem["by_role"]["norm"]["types"] == ["F32"]
    assert mem["by_role"]["routed_expert.text"]["bits_per_param"] == 4.5  # 144 bytes per 256 weights
    shape = LlamaShape.from_config(json.loads((variant / "config.json").read_text()))
    ram = llama_cpp_ram(mem["tensor_bytes"], shape, 4096)
    assert ram["kv_cache"] == 2 * 3 * 2 * 64 * 4096 * 2 and ram["total"] > mem["tensor_bytes"]
    real = {row["profile"]: row for row in real_21b_table()["rows"]}
    # the config-only tensor table reproduces the public BF16 GGUF's size (43.66 GB)
    assert abs(real["source (BF16, norms and routers F32)"]["file_bytes"] / 1e9 - 43.66) < 0.01
    sizes = [real[f"ernie45-moe-gguf-w{b}"]["file_bytes"] for b in (8, 4, 3, 2)]
    assert sizes == sorted(sizes, reverse=True) and 23.2e9 < sizes[0] < 23.6e9


def test_tensors_arriving_out_of_order_are_held_or_spilled(tiny_text, tmp_path):
    from quantkit.formats.gguf.writer import GGUFFile
    from quantkit.quantize.pipeline import rtn_produce

    ckpt, adapter, plan = make_plan(QuantizeOptions(model=str(tiny_text), out=tmp_path, bits=4, format="gguf",
                                                    method="rtn"))
    tensors = {}
    rtn_produce(ckpt, plan, tensors.update)
    files = []
    for hold, names in ((1 << 30, sorted(tensors)), (0, sorted(tensors, reverse=True))):  # 0: every early one spills
        f = GGUFFile(tmp_path / f"{hold}.gguf", ckpt.path, ckpt.config, adapter, plan, "tiny-text", hold_bytes=hold)
        for name in names:
            f.add({name: tensors[name]})
        f.close()
        files.append((tmp_path / f"{hold}.gguf").read_bytes())
    assert files[0] == files[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.gguf", "1073741824.gguf"]
