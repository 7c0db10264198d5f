"""The compressed-tensors format (issue 14): pack-quantized tensors written through compressed-tensors'
own packing, the quantization_config its parser (and vLLM's matching) reads, GPTQ's codes carried
exactly, the plan's bit-width refusals per format, and package / verify / verify-files / push / load on
a compressed-tensors variant. The real clients (transformers, compressed-tensors' decompressor,
GPTQModel) are in test_clients.py."""
import json
import shutil

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from safetensors.torch import load_file, save_file

from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, convert, make_plan, quantize
from quantkit.errors import PlanRefused
from quantkit.format import format_of_variant, get_format
from quantkit.formats.compressed_tensors.config import module_scheme, parse_config
from quantkit.formats.compressed_tensors.packing import pack, packed_nbytes, unpack
from quantkit.loader import dequantized_state_dict
from quantkit.manifest import MANIFEST, file_checksums, read_manifest, verify_files
from quantkit.quantize.rtn import quantize_rtn
from quantkit.scheme import QuantScheme
from quantkit.verify import verify

CT = "compressed-tensors"
TEXT_PROFILE = """name: ct-text
family: ernie45_moe
format: compressed-tensors
rules:
  - role: [router, router_bias, norm, embedding, lm_head]
    keep: true
{extra}  - role: routed_expert
    bits: {bits}
    group_size: {group}
    sym: {sym}
    method: rtn
  - role: [shared_expert, attention, dense_mlp]
    bits: 8
    group_size: 128
    sym: true
    method: rtn
"""


def text_profile(tmp, bits=4, group=128, sym=True, extra="", name="p.yaml"):
    p = tmp / name
    p.write_text(TEXT_PROFILE.format(bits=bits, group=group, sym=str(sym).lower(), extra=extra))
    return str(p)


# -- packing: compressed-tensors' own code packs and decompresses ----------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("group", [32, -1])
def test_pack_is_what_compressed_tensors_decompresses(bits, sym, group):
    torch.manual_seed(bits)
    w = torch.randn(40, 96) * 0.02  # 40 outputs: the zero point's packed dimension needs padding
    qw = quantize_rtn(w, bits, group, sym)
    t = pack(qw)
    assert t["weight_packed"].dtype == torch.int32 and t["weight_scale"].dtype == torch.float32
    assert ("weight_zero_point" in t) == (not sym)
    assert sum(v.numel() * v.element_size() for v in t.values()) == packed_nbytes(40, 96, bits, qw.group_size, sym)
    back = unpack(t, bits, group, sym)
    assert torch.equal(back.codes, qw.codes) and torch.equal(back.zeros, qw.zeros) and torch.equal(back.scales, qw.scales)
    args = QuantizationArgs(num_bits=bits, symmetric=sym, **({"strategy": "channel"} if group == -1 else
                                                               {"group_size": group, "strategy": "group"}))
    theirs = PackedQuantizationCompressor.decompress(t, QuantizationScheme(targets=["Linear"], weights=args))["weight"]
    assert theirs.dtype == torch.float32 and torch.equal(theirs, qw.dequantize())


def test_act_order_and_non_consecutive_groups_are_refused(tmp_path, tiny_text):
    qw = quantize_rtn(torch.randn(32, 64), 4, 32, True)
    qw.g_idx = qw.g_idx.flip(0)
    with pytest.raises(ValueError, match="actorder"):
        pack(qw)
    prof = text_profile(tmp_path, extra="  - role: attention\n    bits: 4\n    desc_act: true\n")
    with pytest.raises(PlanRefused, match=r"tensor model\.layers\.0\.self_attn\.k_proj\.weight: act-order"):
        make_plan(QuantizeOptions(model=str(tiny_text), out=tmp_path / "x", profile=prof))


# -- bits: compressed-tensors takes 2..8, GPTQ and GGUF refuse what they cannot store (GGUF: 7) ----------------
@pytest.mark.parametrize("bits", [5, 6, 7])
def test_widths_only_compressed_tensors_stores(bits, tiny_text, tmp_path):
    opts = dict(model=str(tiny_text), out=tmp_path / "x", bits=bits, method="rtn")
    _, _, plan = make_plan(QuantizeOptions(**opts, format=CT))
    assert {e.scheme.bits for e in plan.quantized() if e.role.kind == "routed_expert"} == {bits}
    with pytest.raises(PlanRefused, match=rf"tensor model\.layers\.1\.mlp\.experts\.0\.down_proj\.weight: {bits}-bit: "
                                          "the GPTQ format stores 2, 3, 4, 8 bits"):
        make_plan(QuantizeOptions(**opts, format="gptq"))
    if bits == 7:  # GGUF's K-quants hold 5 and 6 bits (Q5_K, Q6_K); no GGML type holds 7
        with pytest.raises(PlanRefused, match=rf"tensor model\.layers\.1\.mlp\.experts\.0\.down_proj\.weight .*{bits}-bit"):
            make_plan(QuantizeOptions(**opts, format="gguf"))
    else:
        _, _, gguf_plan = make_plan(QuantizeOptions(**opts, format="gguf"))
        assert {e.storage for e in gguf_plan.quantized() if e.role.kind == "routed_expert"} == {f"Q{bits}_K"}


def test_cli_bits_and_format(tiny_text, tmp_path):
    from click.testing import CliRunner

    from quantkit.cli import main

    r = CliRunner().invoke(main, ["quantize", str(tiny_text), "--bits", "6", "--method", "rtn", "--format", CT,
                                  "--out", str(tmp_path / "w6")])
    assert r.exit_code == 0, r.output
    assert read_manifest(tmp_path / "w6")["format"] == CT
    r = CliRunner().invoke(main, ["quantize", str(tiny_text), "--bits", "6", "--method", "rtn", "--out",
                                  str(tmp_path / "g6")])
    assert r.exit_code == 2 and "the GPTQ format stores 2, 3, 4, 8 bits" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1


# -- the variant and its config ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_w4(tiny_text, tmp_path_factory):
    return quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path_factory.mktemp("ct") / "w4", bits=4,
                                    method="rtn", format=CT, max_shard_size="300KB"))


def test_variant_layout(ct_w4, tiny_text):
    m = read_manifest(ct_w4)
    assert m["format"] == CT and format_of_variant(ct_w4).name == CT
    cfg = json.loads((ct_w4 / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == CT and cfg["format"] == "pack-quantized" and cfg["quantization_status"] == "compressed"
    names = set(json.loads((ct_w4 / "model.safetensors.index.json").read_text())["weight_map"])
    e = "model.layers.1.mlp.experts.3.up_proj"
    assert {f"{e}.weight_packed", f"{e}.weight_scale", f"{e}.weight_shape"} <= names  # per expert, Hub names
    assert f"{e}.weight" not in names and f"{e}.weight_zero_point" not in names
    assert "model.layers.1.mlp.gate.weight" in names  # the router stays float
    # the routed experts' group comes first (transformers reads every expert with that group's scheme)
    first = next(iter(cfg["config_groups"].values()))
    assert first["weights"]["num_bits"] == 4 and all("experts" in t for t in first["targets"])
    # every planned module resolves (compressed-tensors' matching) to its planned scheme, kept ones to none
    parsed = parse_config(cfg, "config.json")
    for name, entry in m["tensors"].items():
        if name.endswith(".weight") and len(entry) and entry["scheme"] != "keep":
            s = module_scheme(parsed, name[: -len(".weight")])[1]
            assert s is not None and s.label.split("-", 1)[1] == entry["scheme"].split("-", 1)[1], name
    assert module_scheme(parsed, "model.layers.1.mlp.gate") == (None, None)
    assert module_scheme(parsed, "model.embed_tokens") == (None, None)
    assert m["predicted_tensor_bytes"] == get_format(CT).file_bytes(ct_w4)["tensor_bytes"]


def test_vllm_names_in_config(tmp_path_factory):
    """ERNIE-4.5-VL (remote-code flavour, what vLLM reads): the routers are ignored under vLLM's names
    and vLLM's FusedMoE names (`<layer>.text_experts.0.<proj>`) resolve to the experts' scheme."""
    from quantkit.reference.tiny import REMOTE_AUTO_MAP, build_tiny_vl

    src = build_tiny_vl(tmp_path_factory.mktemp("m") / "vl-remote", seed=0, flavour="remote")
    for ref in REMOTE_AUTO_MAP.values():  # the repo's remote-code files (stubs: vLLM needs them present)
        (src / f"{ref.rsplit('.', 1)[0]}.py").write_text("# remote code (stub for tests)\n")
    v = quantize(QuantizeOptions(model=str(src), out=src.parent / "ct", bits=2, method="rtn", format=CT,
                                 group_size=32))
    cfg = parse_config(json.loads((v / "config.json").read_text())["quantization_config"], "config.json")
    for n in (1, 2):
        for m in ("text", "vision"):
            assert module_scheme(cfg, f"language_model.model.layers.{n}.mlp.{m}_experts_gate") == (None, None)
            assert any(i.endswith(f"{m}_experts_gate$") for i in cfg.ignore)
            for p in ("gate", "up", "down"):
                s = module_scheme(cfg, f"language_model.model.layers.{n}.mlp.{m}_experts.0.{p}_proj")[1]
                assert (s.bits, s.group_size) == (2, 32), (n, m, p)
        assert module_scheme(cfg, f"language_model.model.layers.{n}.self_attn.q_proj")[1].bits == 4
        # transformers' in-memory names (model.language_model.layers...) match the prefix-free targets too
        assert module_scheme(cfg, f"model.language_model.layers.{n}.mlp.shared_experts.up_proj")[1].bits == 4
    assert module_scheme(cfg, "model.vision_model.blocks.0.attn.qkv") == (None, None)
    report = verify(v, runtimes=("vllm",), load=False)
    assert report.runtimes["vllm"].servable, report.lines()
    assert report.runtimes["vllm"].serve.endswith("vllm serve DIR --trust-remote-code")


# -- GPTQ's codes carried exactly ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gptq_pair(tiny_text, tmp_path_factory):
    """One calibration of the tiny text model; GPTQ at 4 (sym) and 2 bits (asym, the shipped w2 profile)
    written once as GPTQ and once as compressed-tensors from it."""
    from quantkit.calibrate.samples import DEFAULT_SET_DIR

    root = tmp_path_factory.mktemp("pair")
    lines = [x for x in (DEFAULT_SET_DIR / "samples.jsonl").read_text().splitlines()
             if all(c["type"] == "text" for m in json.loads(x)["messages"]
                    for c in (m["content"] if isinstance(m["content"], list) else []))][:3]
    (root / "s.jsonl").write_text("\n".join(lines) + "\n")
    calib, _ = calibrate(CalibrateOptions(model=str(tiny_text), out=root / "calib", samples=str(root / "s.jsonl")))
    return {(bits, fmt): quantize(QuantizeOptions(model=str(tiny_text), out=root / f"w{bits}-{fmt}", bits=bits,
                                                  calib=calib, format=fmt))
            for bits in (4, 2) for fmt in ("gptq", CT)}


@pytest.mark.parametrize("bits", [4, 2])
def test_same_solver_result_dequantizes_identically(gptq_pair, bits, tmp_path):
    g, c = gptq_pair[(bits, "gptq")], gptq_pair[(bits, CT)]
    assert read_manifest(c)["method"] == ["gptq"]
    a, b = dequantized_state_dict(g), dequantized_state_dict(c)
    assert set(a) == set(b)
    assert all(torch.equal(a[n], b[n]) for n in a), [n for n in a if not torch.equal(a[n], b[n])][:3]
    ga, cb = get_format("gptq").read_codes(g), get_format(CT).read_codes(c)
    assert ga.modules == cb.modules
    for m in ga.modules:
        x, y = ga.read(m), cb.read(m)
        assert torch.equal(x.codes, y.codes) and torch.equal(x.zeros, y.zeros) and torch.equal(x.scales, y.scales)
    # converting the GPTQ variant (no requantization) gives the same tensors as writing it directly
    conv = convert(g, CT, tmp_path / "conv")
    assert read_manifest(conv)["source"] == read_manifest(g)["source"]
    direct = {}
    for shard in sorted(c.glob("*.safetensors")):
        direct.update(load_file(shard))
    converted = {}
    for shard in sorted(conv.glob("*.safetensors")):
        converted.update(load_file(shard))
    assert set(direct) == set(converted) and all(torch.equal(direct[n], converted[n]) for n in direct)
    assert json.loads((conv / "config.json").read_text())["quantization_config"] == \
        json.loads((c / "config.json").read_text())["quantization_config"]


# -- verify, package, verify-files, push (dry run), load ---------------------------------------------
def _refresh(d):
    m = read_manifest(d)
    m["files"] = file_checksums(d)
    (d / MANIFEST).write_text(json.dumps(m, indent=1) + "\n")


def test_verify_and_package(ct_w4, tmp_path):
    from quantkit.publish import CARD, PackageOptions, PushOptions, package, push

    report = verify(ct_w4)
    assert report.servable, report.lines()
    assert [c.id for c in report.integrity if c.status == "pass"][-1] == "integrity.ct_decompressor"
    assert report.lines()[:3] == ["integrity: ok", "vllm: servable",
                                  "  serve: vLLM >= 0.34 (compressed-tensors WNA16): vllm serve DIR --trust-remote-code"]
    v = shutil.copytree(ct_w4, tmp_path / "v")
    r = package(PackageOptions(variant=v, base_model="test-org/tiny-ernie45", license="apache-2.0"))
    assert r.name.suffix == "CT-W4A16-g128-rtn"
    card = (v / CARD).read_text()
    assert "compressed-tensors" in r.metadata["tags"] and r.metadata["library_name"] == "transformers"
    assert "vllm serve ORG/NAME --trust-remote-code" in card and "AutoModelForCausalLM.from_pretrained" in card
    assert "vllm serve DIR --trust-remote-code" in card  # the verdicts table carries the serve line
    assert verify_files(v).ok
    plan = push(PushOptions(variant=v, repo="test-org/{name}", dry_run=True)).plan
    assert plan.name.full.endswith("CT-W4A16-g128-rtn") and any(f.path.endswith(".safetensors") for f in plan.files)


def test_broken_variants_name_the_rule(ct_w4, tmp_path):
    # the router no longer ignored under vLLM's name... and targeted by the experts' group
    d = shutil.copytree(ct_w4, tmp_path / "router")
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["ignore"] = [i for i in cfg["quantization_config"]["ignore"] if "gate$" not in i]
    cfg["quantization_config"]["config_groups"]["group_0"]["targets"].append(r"re:.*mlp\.gate$")
    (d / "config.json").write_text(json.dumps(cfg))
    _refresh(d)
    report = verify(d, load=False)
    c = report.check("vllm.router_unquantized")
    assert c.status == "fail" and "model.layers.1.mlp.gate: vLLM's router name is not in `ignore`" in c.details
    # the config says another group size than the files hold: compressed-tensors would misread them
    d = shutil.copytree(ct_w4, tmp_path / "group")
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    _refresh(d)
    report = verify(d, load=False)
    assert report.check("integrity.modules").status == "fail" and not report.integrity_ok
    assert report.check("integrity.ct_decompressor").status == "fail"
    # a weight changed after writing: the checksum catches it
    d = shutil.copytree(ct_w4, tmp_path / "bytes")
    shard = next(p for p in sorted(d.glob("*.safetensors")) if any(n.endswith("weight_packed") for n in load_file(p)))
    t = load_file(shard)
    name = next(n for n in t if n.endswith("weight_packed"))
    t[name] = t[name] ^ 1
    save_file(t, shard, metadata={"format": "pt"})
    assert verify(d, load=False).check("integrity.checksums").status == "fail"


def test_experts_of_different_widths_per_layer(tiny_text, tmp_path):
    """Layer 1's experts at 4 bits, layer 2's at 2: vLLM reads a scheme per FusedMoE layer (servable),
    transformers one for every expert of the model (refused, and from_pretrained shows why)."""
    extra = "  - role: routed_expert\n    name: 'layers\\.2\\.'\n    bits: 2\n    group_size: 64\n    method: rtn\n"
    v = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "mix", profile=text_profile(tmp_path, extra=extra)))
    report = verify(v)
    assert report.runtimes["vllm"].servable, report.lines()
    assert not report.runtimes["transformers"].servable
    c = report.check("transformers.experts_scheme")
    assert c.status == "fail" and len(c.details) == 1 and "transformers reads every routed expert as w" in c.details[0]
    assert report.check("transformers.load").status == "fail"


def test_quantkit_load_and_profile_memory(ct_w4, tiny_text):
    from quantkit.loader import load
    from quantkit.profile.memory import file_bytes

    model = load(ct_w4)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    fb = file_bytes(ct_w4)
    assert fb["by_role"]["routed_expert.text"]["params"] == 2 * 8 * 3 * 256 * 256
    assert fb["file_bytes"] == sum(p.stat().st_size for p in ct_w4.glob("*.safetensors"))
    bpp = fb["by_role"]["routed_expert.text"]["bits_per_param"]
    assert 4 < bpp < 4 + 32 / 128 + 0.01  # 4-bit codes + an fp32 scale per 128 weights


def test_profile_format_and_bits(tmp_path):
    """The profile room accepts `format: compressed-tensors`, and a wrong bits value is one clear line."""
    from quantkit.errors import ProfileError
    from quantkit.profiles import load_profile

    p = tmp_path / "p.yaml"
    p.write_text(TEXT_PROFILE.format(bits=6, group=128, sym="true", extra=""))
    assert load_profile(p).format == CT
    p.write_text(TEXT_PROFILE.format(bits=9, group=128, sym="true", extra=""))
    with pytest.raises(ProfileError, match=r"p\.yaml rule 2: .*bits.* must be one of 2, 3, 4, 5, 6, 7, 8, got 9"):
        load_profile(p)
    assert QuantScheme(bits=7).bits == 7


def test_profile_reads_a_compressed_tensors_variant(tmp_path):
    """`quantkit profile` on a compressed-tensors variant of the trained reference (VL): loads it through
    quantkit.load, measures its bytes from the files."""
    from quantkit.profile import ProfileOptions, profile
    from quantkit.reference.trained import TRAINED_DIR

    v = quantize(QuantizeOptions(model=str(TRAINED_DIR), out=tmp_path / "ct-w4", bits=4, method="rtn", format=CT))
    result = profile(ProfileOptions(reference=str(TRAINED_DIR), variants=[str(v)], out=tmp_path / "report",
                                    eval_items_per_kind=2))
    row = result["variants"][0]
    assert row["memory"]["file_bytes"] == sum(p.stat().st_size for p in v.glob("*.safetensors"))
    assert row["accuracy"]["kl"]["all"] < 0.1 and (tmp_path / "report" / "report.json").is_file()


def test_export_gguf_reads_a_compressed_tensors_variant(tiny_text, tmp_path):
    """`quantkit export-gguf` takes the codes of a compressed-tensors variant (Format.read_codes) as they are:
    the GGUF decodes to exactly the same quantized weights."""
    from quantkit.profiles import PROFILE_DIR

    # the shipped 4-bit GGUF profile with Q4_0 experts (it stores Q4_K, whose 6-bit scale codes
    # compressed-tensors cannot hold): 4-bit g32 symmetric, which both formats store exactly
    profile = tmp_path / "q4_0.yaml"
    profile.write_text((PROFILE_DIR / "ernie45-moe-gguf-w4.yaml").read_text().replace("gguf_type: Q4_K", "gguf_type: Q4_0"))
    v = quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path / "ct", profile=str(profile), method="rtn",
                                 format=CT))
    g = convert(v, "gguf", tmp_path / "gguf")
    assert read_manifest(g)["exported_from"]["format"] == CT
    a, b = dequantized_state_dict(v), dequantized_state_dict(g)
    quantized = [n for n, e in read_manifest(v)["tensors"].items() if e["scheme"] != "keep"]
    assert len(quantized) == 69 and all(torch.equal(a[n], b[n]) for n in quantized)
    with pytest.raises(PlanRefused, match="6-bit code .*--format gguf"):  # Q4_K: one line naming the tensor
        make_plan(QuantizeOptions(model=str(tiny_text), out=tmp_path / "k", profile="ernie45-moe-gguf-w4", format=CT))


def test_cards_say_which_engines_serve_each_variant():
    from quantkit.format import CardInput

    def lines(fmt, bits, sym=True, **kw):
        info = CardInput(scheme=QuantScheme(bits=bits, sym=sym), scheme_text=f"{bits}-bit", **kw)
        return "\n".join(get_format(fmt).card({}, info).runtime_lines)

    text = lines(CT, 4)
    assert "vllm serve ORG/NAME --trust-remote-code" in text and "Marlin" in text
    assert "AutoModelForCausalLM.from_pretrained(\"ORG/NAME\")" in text
    text = lines(CT, 2, sym=False)
    assert "Humming" in text and "not with asymmetric experts" in text and "from_pretrained(" not in text
    text = lines(CT, 3, vision=True, flavour="remote", remote_code=True)
    assert "3-bit is the width" in text and "not for this model (transformers 5.25)" in text
    assert "not with this config" in lines(CT, 4, vision=True, flavour="native", model_type="ernie4_5_vl_moe")
    # GPTQ: 2-bit asymmetric is served with --quantization humming; plain from_pretrained is warned against
    text = lines("gptq", 2, sym=False)
    assert "vllm serve ORG/NAME --quantization humming" in text and "cannot serve" not in text
    assert "do not use it on this variant" in text and "--format compressed-tensors" in text
    assert "loads silently with randomly initialised experts" in lines("gptq", 8)
    assert "--quantization humming" not in lines("gptq", 4)
