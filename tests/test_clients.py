"""Proof by clients quantkit did not write (issue 14), on the tiny ERNIE models, no network:

- transformers' own `from_pretrained` loads compressed-tensors variants of the tiny text MoE at 4 and 2
  bits (symmetric) with no missing/unexpected keys and quantkit.load's logits (<= 1e-4); with
  asymmetric experts, and for the tiny ERNIE-4.5-VL, it fails, and the tests pin the exact failures
  (transformers bugs: the files are read exactly by compressed-tensors' own reader);
- compressed-tensors' own model-free decompressor reproduces every quantized tensor exactly;
- GPTQModel (optional extra `gptqmodel`; skipped with the reason when it is not importable) loads the
  GPTQ text variant, decodes every module to quantkit's weight (fp16 output) and gives quantkit.load's
  logits once its known loss of the router bias is accounted for; the VL variant it refuses.
"""
import importlib.util
import logging
import re

import pytest
import torch

from quantkit.api import QuantizeOptions, quantize
from quantkit.loader import dequantized_state_dict, load

CT = "compressed-tensors"
IDS = torch.tensor([[1, 5, 9, 100, 200, 7, 8, 3, 42, 17, 64, 12]])
SYM = {True: "", False: "-asym"}
PROFILE = """name: clients
family: ernie45_moe
format: compressed-tensors
rules:
  - role: [router, router_bias, norm, embedding, lm_head]
    keep: true
  - role: routed_expert
    bits: {bits}
    group_size: 64
    sym: {sym}
    method: rtn
  - role: [shared_expert, attention, dense_mlp]
    bits: {bits}
    group_size: 128
    sym: {sym}
    method: rtn
"""


@pytest.fixture(scope="module")
def text_variants(tiny_text, tmp_path_factory):
    root = tmp_path_factory.mktemp("clients")
    out = {}
    for bits in (4, 2):
        for sym in (True, False):
            prof = root / f"w{bits}{SYM[sym]}.yaml"
            prof.write_text(PROFILE.format(bits=bits, sym=str(sym).lower()))
            out[(bits, sym)] = quantize(QuantizeOptions(model=str(tiny_text), out=root / f"ct-w{bits}{SYM[sym]}",
                                                        profile=str(prof), max_shard_size="400KB"))
    return out


class LoadReport(logging.Handler):
    """What transformers logs while loading (its loading report, which names each failed conversion)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record):
        self.text += record.getMessage() + "\n"

    def __enter__(self):
        logging.getLogger("transformers").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("transformers").removeHandler(self)


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


@pytest.mark.parametrize("bits", [4, 2])
def test_transformers_from_pretrained_loads_the_text_variant(text_variants, bits):
    from transformers import AutoModelForCausalLM

    v = text_variants[(bits, True)]
    model, info = AutoModelForCausalLM.from_pretrained(v, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(model).__name__ == "Ernie4_5_MoeForCausalLM"
    ours = _logits(load(v))
    d = (_logits(model) - ours).abs().max().item()
    print(f"w{bits} sym: max |dlogit| transformers vs quantkit.load = {d:.3g}")
    assert d <= 1e-4
    # and the weights themselves: every module transformers built equals quantkit's dequantized weight
    state = dequantized_state_dict(v)
    experts = model.model.layers[1].mlp.experts
    for k in range(experts.gate_up_proj.shape[0]):
        gate_up = torch.cat([state[f"model.layers.1.mlp.experts.{k}.{p}_proj.weight"] for p in ("gate", "up")])
        assert torch.equal(experts.gate_up_proj[k], gate_up) and \
            torch.equal(experts.down_proj[k], state[f"model.layers.1.mlp.experts.{k}.down_proj.weight"])
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, state["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("bits", [4, 2])
def test_transformers_loses_asymmetric_experts_zero_points(text_variants, bits):
    """Asymmetric experts: transformers 5.25's CompressedTensorsDequantize builds its DummyModule from
    weight_packed/weight_scale/weight_shape only, so compressed-tensors' decompressor finds no zero point.
    The files are complete: compressed-tensors' own reader and quantkit.load read them (test below)."""
    from transformers import AutoModelForCausalLM

    from quantkit.verify import verify

    v = text_variants[(bits, False)]
    with LoadReport() as log, pytest.raises(RuntimeError, match="issues during automatic conversion of the weights"):
        AutoModelForCausalLM.from_pretrained(v, dtype=torch.float32)
    report = log.text
    assert "AssertionError: Asymmetric quant requires zero-point values" in report
    assert re.search(r"Error: CompressedTensorsDequantize on tensors destined for model\.layers\.\d\.mlp\.experts\."
                     r"gate_up_proj", report)
    assert "self_attn" not in "".join(x for x in report.splitlines() if x.startswith("Error: "))  # dense modules load
    r = verify(v, runtimes=("transformers",), load=False)
    c = r.check("transformers.experts_symmetric")
    assert c.status == "fail" and "zero points" in c.summary
    assert r.integrity_ok and r.check("integrity.ct_decompressor").status == "pass"


def test_transformers_cannot_load_the_vl_variant(tiny_vl, tmp_path):
    """transformers 5.25's compressed-tensors loader on ERNIE-4.5-VL (every module 4-bit g32, so one
    scheme fits all): the experts' dequantize stacks text and vision experts (widths 64 and 32) into a
    buffer shaped like expert 0, and its `Transpose` of the router meets the dequantize step first.
    These are transformers' bugs (shared/notes/formats.md), not the files': compressed-tensors' own
    reader and vLLM's rules take the same variant."""
    from transformers import Ernie4_5_VLMoeForConditionalGeneration

    from quantkit.verify import verify

    v = quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path / "vl", bits=4, method="rtn", format=CT,
                                 group_size=32))
    with LoadReport() as log, pytest.raises(RuntimeError, match="issues during automatic conversion of the weights"):
        Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(v, dtype=torch.float32)
    report = log.text
    for line in (r"Error: CompressedTensorsDequantize on tensors destined for "
                 r"model\.language_model\.layers\.\d\.mlp\.text_moe\.experts\.gate_up_proj",
                 r"Error: CompressedTensorsDequantize on tensors destined for "
                 r"model\.language_model\.layers\.\d\.mlp\.text_moe\.experts\.down_proj",
                 r"Error: Transpose on tensors destined for model\.language_model\.layers\.\d\.mlp\.text_moe\.gate\.weight",
                 r"RuntimeError: The size of tensor a \(64\) must match the size of tensor b \(32\)",
                 r"ValueError: Undefined Operation encountered!"):
        assert re.search(line, report), line
    r = verify(v, runtimes=("transformers",))
    assert r.integrity_ok and r.check("integrity.ct_decompressor").status == "pass"
    assert r.check("transformers.moe_layout").status == "fail"
    load_check = r.check("transformers.load")
    assert load_check.status == "fail" and "text_moe.gate.weight (ValueError: Undefined Operation" in load_check.summary


@pytest.mark.parametrize("key", [(4, True), (2, False)], ids=["w4", "w2-asym"])
def test_compressed_tensors_decompressor_reproduces_every_tensor(text_variants, key):
    """`CompressedTensorsDequantizer(DIR).validate(tensors)`: compressed-tensors' model-free reader
    (config parsing, target/ignore matching, unpacking, dequantization), on every tensor at once."""
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    from quantkit.checkpoint import Checkpoint

    v = text_variants[key]
    ckpt = Checkpoint.open(v)
    tensors = ckpt.read_many(ckpt.names())
    theirs = CompressedTensorsDequantizer(v, dtype=torch.float32).validate(dict(tensors))  # raises on residual qparams
    ours = dequantized_state_dict(v)
    assert set(theirs) == set(ours)
    quantized = [n for n in ours if f"{n[:-len('.weight')]}.weight_packed" in tensors]
    assert len(quantized) == 2 * 8 * 3 + 3 * 4 + 3 + 2 * 3
    for n in ours:
        assert torch.equal(theirs[n].float(), ours[n]), n


# -- GPTQModel ---------------------------------------------------------------------------------------
needs_gptqmodel = pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                                     reason="gptqmodel is not installed (pip install -e '.[gptqmodel]')")


@pytest.fixture(scope="module")
def gptq_text(tiny_text, tmp_path_factory):
    return quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path_factory.mktemp("gq") / "w4", bits=4,
                                    method="rtn"))


@needs_gptqmodel
def test_gptqmodel_loads_the_gptq_text_variant(gptq_text):
    """GPTQModel 7.x (CPU kernels are fp16/bf16 only): every quantized module dequantizes to quantkit's
    weight within fp16 rounding; its model drops `moe_statics.e_score_correction_bias` (left at zero: its
    loader skips transformers' key rename), so its logits equal quantkit.load's only once quantkit's
    model routes with the same zero bias."""
    from gptqmodel import GPTQModel

    m = GPTQModel.load(str(gptq_text), device="cpu", dtype=torch.float16)
    state = dequantized_state_dict(gptq_text)
    modules = {n: mod for n, mod in m.model.named_modules() if hasattr(mod, "dequantize_weight")}
    assert len(modules) == 2 * 8 * 3 + 3 * 4 + 3 + 2 * 3
    for n, mod in modules.items():
        ref = state[f"{n}.weight"]
        assert torch.allclose(mod.dequantize_weight().T.float(), ref, rtol=2**-10, atol=2**-24), n
    ours = load(gptq_text)
    bias = {n: p for n, p in m.model.named_parameters() if n.endswith("e_score_correction_bias")}
    bias |= {n: b for n, b in m.model.named_buffers() if n.endswith("e_score_correction_bias")}
    assert bias and all(not b.any() for b in bias.values()), "GPTQModel now keeps the router bias: update README"
    for n, p in ours.named_parameters():
        if n.endswith("e_score_correction_bias"):
            p.data.zero_()
    theirs = _logits(m.model).float()
    d = (theirs - _logits(ours)).abs().max().item()
    print(f"GPTQModel (fp16) vs quantkit.load with the router bias zeroed: max |dlogit| = {d:.3g}")
    assert d < 2e-2


@needs_gptqmodel
def test_gptqmodel_refuses_the_gptq_vl_variant(tiny_vl_w4):
    from gptqmodel import GPTQModel

    with pytest.raises(ValueError, match=r"Missing required quantized weights .*model\.language_model\.layers"):
        GPTQModel.load(str(tiny_vl_w4), device="cpu", dtype=torch.float16)
