"""Issue 16, the vision-language family: Qwen3-VL-MoE (`Qwen3VLMoeForConditionalGeneration`,
Qwen/Qwen3-VL-30B-A3B-Instruct) with the guarantees the ERNIE families have, images included.

- the Hub layout fuses all experts of a layer into transposed 3-D tensors; the adapter's view shows them
  per expert (what the core plans and what vLLM reads quantized) and fuses them back for transformers;
- the layer-by-layer runner (DeepStack included) reproduces the full model's logits on image+text and on
  text; the shipped calibration set reaches every expert;
- GPTQ 8/4/2-bit variants decode within the ERNIE tests' (relative) bound, GPTQ beats RTN on held-out
  tokens, names and rules are vLLM's;
- the GGUF (arch qwen3vlmoe) and its vision projector (mmproj, qwen3vl_merger) run in the real llama.cpp:
  text position by position, and an image through llama.cpp's mtmd, against quantkit's decoding.
"""
import ctypes
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import quantkit
from quantkit.adapters import adapter_for, real_config
from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, open_model, quantize
from quantkit.calibrate.runner import LayerStream
from quantkit.calibrate.samples import DEFAULT_SET_DIR
from quantkit.calibrate.store import CalibrationDir
from quantkit.checkpoint import Checkpoint, ConfigCheckpoint, TensorInfo
from quantkit.errors import CheckpointError
from quantkit.formats.gguf.engine import open_llama
from quantkit.loader import dequantized_state_dict, load_source
from quantkit.plan import build_plan
from quantkit.profiles import resolve_profile
from quantkit.reference.inputs import synthetic_image, vl_inputs
from quantkit.reference.tiny_qwen3 import build_tiny_qwen3_vl_moe, to_hub_expert_layout
from quantkit.reference.tokenizer import CORPUS
from quantkit.verify import verify

RELATIVE_BOUND = 0.25  # tests/test_qwen3_moe.py: the ERNIE bound as a share of the zeroed-experts control
L0 = "model.language_model.layers.0.mlp.experts."


def kl_per_token(ref_logits, logits):
    p, q = F.log_softmax(ref_logits.double(), -1), F.log_softmax(logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1).flatten()


def subset(tmp_path, name, keep):
    """The shipped set's samples for which keep(index) holds, picture paths made absolute."""
    lines = []
    for i, line in enumerate((DEFAULT_SET_DIR / "samples.jsonl").read_text().splitlines()):
        if not keep(i):
            continue
        s = json.loads(line)
        for m in s["messages"]:
            for c in m["content"] if isinstance(m["content"], list) else []:
                if c["type"] == "image":
                    c["image"] = str((DEFAULT_SET_DIR / c["image"]).resolve())
                if c["type"] == "video":
                    c["video"] = [str((DEFAULT_SET_DIR / f).resolve()) for f in c["video"]]
        lines.append(json.dumps(s))
    out = tmp_path / f"{name}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_qwen3_vl_moe(tmp_path_factory.mktemp("qwen3vl") / "tiny-qwen3-vl-moe", seed=0)


@pytest.fixture(scope="module")
def calib(model, tmp_path_factory):
    return calibrate(CalibrateOptions(model=str(model), out=tmp_path_factory.mktemp("vlcal") / "calib"))


@pytest.fixture(scope="module")
def variants(model, calib, tmp_path_factory):
    root = tmp_path_factory.mktemp("vlvariants")
    out = {}
    for bits in (8, 4, 2):
        out[f"w{bits}"] = quantize(QuantizeOptions(model=str(model), out=root / f"w{bits}", bits=bits, calib=calib[0]))
        out[f"w{bits}-rtn"] = quantize(QuantizeOptions(model=str(model), out=root / f"w{bits}-rtn", bits=bits,
                                                       method="rtn"))
    return out


def test_hub_layout_is_fused_and_the_view_splits_it_per_expert(model, tmp_path):
    index = json.loads((model / "model.safetensors.index.json").read_text())["weight_map"]
    raw = Checkpoint.open(model)
    assert raw.info(L0 + "gate_up_proj").shape == (8, 256, 1024)  # [E, H, 2I], stored [in, out]
    assert raw.info(L0 + "down_proj").shape == (8, 512, 256)  # [E, I, H]
    assert not any(".experts.0." in k for k in index)
    ckpt, adapter = open_model(model)
    assert adapter.family == "qwen3_vl_moe"
    assert ckpt.info(L0 + "3.gate_proj.weight").shape == (512, 256) and ckpt.info(L0 + "3.down_proj.weight").shape == (256, 512)
    assert set(ckpt.names()) == set(adapter.tensor_shapes())
    # the view's pieces are the experts transformers builds from the same files
    experts = load_source(model).model.language_model.layers[0].mlp.experts
    got = ckpt.read_many([L0 + f"{k}.{p}_proj.weight" for k in range(8) for p in ("gate", "up", "down")])
    for k in range(8):
        assert torch.equal(got[L0 + f"{k}.gate_proj.weight"], experts.gate_up_proj[k, :512].detach())
        assert torch.equal(got[L0 + f"{k}.up_proj.weight"], experts.gate_up_proj[k, 512:].detach())
        assert torch.equal(ckpt.read(L0 + f"{k}.down_proj.weight"), experts.down_proj[k].detach())
    # transformers 5's own save_pretrained layout ([E, 2I, H] / [E, H, I]) reads to the same pieces
    own = tmp_path / "own-layout"
    shutil.copytree(model, own)
    to_hub_expert_layout(own)  # a transpose of dims 1, 2: back to the in-memory layout
    assert Checkpoint.open(own).info(L0 + "gate_up_proj").shape == (8, 1024, 256)
    assert torch.equal(open_model(own)[0].read(L0 + "5.up_proj.weight"), got[L0 + "5.up_proj.weight"])
    # and back for transformers: the per-expert state fuses into what the class loads
    state = adapter.loadable_state({n: ckpt.read(n) for n in ckpt.names()})
    assert torch.equal(state[L0 + "gate_up_proj"], experts.gate_up_proj.detach())
    # roles: experts, router, q/k norms, vision tower and mergers
    kinds = {n: adapter.role_of(n).kind for n in ckpt.names()}
    assert kinds["model.visual.blocks.1.attn.qkv.weight"] == "vision_tower"
    assert kinds["model.visual.deepstack_merger_list.0.linear_fc1.weight"] == "resampler"
    assert kinds["model.language_model.layers.2.self_attn.k_norm.weight"] == "norm"
    assert adapter.role_of(L0 + "gate_up_proj").kind == "routed_expert"  # the stored name too


def test_orientation_that_cannot_be_told_apart_is_refused(model):
    cfg = json.loads((model / "config.json").read_text())
    cfg["text_config"]["moe_intermediate_size"] = 128  # 2I == H: [E, H, 2I] == [E, 2I, H]
    adapter = adapter_for(cfg)
    with pytest.raises(CheckpointError, match="cannot be told apart"):
        adapter._pieces(TensorInfo(L0 + "gate_up_proj", "F32", (8, 256, 256), "x"))


def _stream_logits(model, inputs):
    ckpt, adapter = open_model(model)
    stream = LayerStream(ckpt, adapter)
    return stream.logits(stream.run([inputs]).hidden[0])


def test_streaming_runner_reproduces_the_full_model_with_images_and_deepstack(model, monkeypatch):
    inputs = vl_inputs(model)
    assert (inputs["mm_token_type_ids"] != 0).any()
    with torch.no_grad():
        ref = load_source(model)(**inputs).logits
    got = _stream_logits(model, inputs)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()
    from transformers import AutoTokenizer
    text = dict(AutoTokenizer.from_pretrained(str(model))(" ".join(CORPUS[:6]), return_tensors="pt"))
    with torch.no_grad():
        ref_text = load_source(model)(**text).logits
    assert torch.allclose(_stream_logits(model, text), ref_text, atol=1e-5, rtol=0)
    # control: without DeepStack's features the streamed model is another model
    from quantkit.adapters.qwen3_vl_moe import Qwen3VLMoeRunner
    monkeypatch.setattr(Qwen3VLMoeRunner, "watch_prefix", lambda self, model: ([], {}))
    assert (_stream_logits(model, inputs) - ref).abs().max() > 1e-3


def test_every_expert_gets_tokens_from_the_shipped_set(model, calib):
    path, report = calib
    _, adapter = open_model(model)
    meta = json.loads((path / "calibration.json").read_text())
    assert meta["samples"]["tokens"]["vision"] > 1000 and meta["samples"]["skipped_with_media"] == 0
    store = CalibrationDir(path)
    for n in adapter.shape.moe_layers:
        r = report[f"{n}.text"]  # one expert set for text and image tokens
        assert r["experts"] == 8 and r["min"] > 64 and r["zero"] == [], r
        routing = store.layer(n).routing["text"]
        assert sum(routing["tokens_per_expert"]) == routing["tokens"] * adapter.shape.top_k
        assert routing["tokens"] == meta["samples"]["tokens"]["text"] + meta["samples"]["tokens"]["vision"]


def test_variants_decode_close_to_the_source(model, variants):
    inputs = vl_inputs(model)
    with torch.no_grad():
        ref = load_source(model)(**inputs).logits
        kl = {name: float(kl_per_token(ref, quantkit.load(v)(**inputs).logits).mean()) for name, v in variants.items()}
        broken = quantkit.load(variants["w4"])
        for name, p in broken.named_parameters():
            if ".experts." in name:
                p.zero_()
        control = float(kl_per_token(ref, broken(**inputs).logits).mean())
    print("\nQwen3-VL-MoE tiny, image+text, mean KL/token:", {k: f"{v:.2e}" for k, v in kl.items()}, f"zeroed {control:.2e}")
    assert kl["w8"] < kl["w4"] < kl["w2"]
    assert kl["w8"] < RELATIVE_BOUND * control and kl["w4"] < RELATIVE_BOUND * control, (kl, control)
    assert kl["w2"] < kl["w2-rtn"], kl


@pytest.mark.parametrize("bits", [4, 2])
def test_gptq_beats_rtn_on_held_out_tokens(model, tmp_path, bits):
    train, held = subset(tmp_path, "train", lambda i: i % 4 != 0), subset(tmp_path, "held", lambda i: i % 4 == 0)
    cal, _ = calibrate(CalibrateOptions(model=str(model), out=tmp_path / "ct", samples=str(train)))
    cal_held, _ = calibrate(CalibrateOptions(model=str(model), out=tmp_path / "ch", samples=str(held), mode="routed"))
    gptq = quantize(QuantizeOptions(model=str(model), out=tmp_path / "g", bits=bits, calib=cal))
    rtn = quantize(QuantizeOptions(model=str(model), out=tmp_path / "r", bits=bits, method="rtn"))
    ckpt, adapter = open_model(model)
    store = CalibrationDir(cal_held)
    errors = []
    for v in (gptq, rtn):
        deq, e = dequantized_state_dict(v), {}
        for name, t in json.loads((v / "quantkit.json").read_text())["tensors"].items():
            if t["scheme"] == "keep":
                continue
            role = adapter.role_of(name)
            h, n = store.layer(role.layer).hessian(adapter.input_group(name[: -len(".weight")]))
            if h is not None:
                dw = ckpt.read(name).float() - deq[name]  # the view's per-expert source weights
                key = (role.layer, role.label, role.proj)
                e[key] = e.get(key, 0.0) + float(torch.einsum("oi,ij,oj->", dw, h, dw)) * n
        errors.append(e)
    e_gptq, e_rtn = errors
    assert set(e_gptq) == set(e_rtn) and len(e_gptq) >= 9
    worse = {k: (e_gptq[k], e_rtn[k]) for k in e_gptq if not e_gptq[k] < e_rtn[k]}
    assert not worse, worse
    ratio = sum(e_gptq.values()) / sum(e_rtn.values())
    print(f"Qwen3-VL-MoE {bits}-bit: GPTQ/RTN held-out reconstruction error = {ratio:.3f}")
    assert ratio < 0.9


def test_gptq_variant_is_what_vllms_qwen3_vl_moe_loader_reads(variants):
    v = variants["w4"]
    names = set(json.loads((v / "model.safetensors.index.json").read_text())["weight_map"]) \
        if (v / "model.safetensors.index.json").is_file() else set(Checkpoint.open(v).names())
    assert L0 + "7.down_proj.qweight" in names and not any(n.endswith("experts.gate_up_proj") for n in names)
    assert "model.visual.blocks.0.attn.qkv.weight" in names  # vision tower float
    adapter = adapter_for(json.loads((v / "config.json").read_text()))
    lm = "model.language_model.layers.1."
    units = {m: adapter.vllm_unit(m, adapter.role_of(m + ".weight"))[:2] for m in (
        lm + "self_attn.v_proj", lm + "mlp.experts.2.up_proj", lm + "mlp.gate", "model.visual.blocks.0.attn.qkv")}
    vl = "language_model.model.layers.1."
    assert units == {lm + "self_attn.v_proj": (vl + "self_attn.qkv_proj", "linear"),
                     lm + "mlp.experts.2.up_proj": (vl + "mlp.experts", "moe"),
                     lm + "mlp.gate": (vl + "mlp.gate", "router"),
                     "model.visual.blocks.0.attn.qkv": ("visual.blocks.0.attn.qkv", "vision")}
    report = verify(v, runtimes=("vllm",))
    assert report.integrity_ok, report.lines()
    failed = [c for c in report.runtimes["vllm"].checks if c.status == "fail"]
    assert not failed, [(c.id, c.summary, c.details[:3]) for c in failed]


def test_real_config_sizes_plans_without_downloading():
    cfg = real_config("Qwen3-VL-30B-A3B")
    adapter = adapter_for(cfg)
    shapes = adapter.tensor_shapes()
    params = sum(int(np.prod(s)) for s in shapes.values())
    with torch.device("meta"):
        real = adapter.model_class()(adapter.native_config())
    assert params == sum(p.numel() for p in real.parameters()) and 31.0e9 < params < 31.2e9  # published: 31B
    ckpt = ConfigCheckpoint(cfg, "Qwen/Qwen3-VL-30B-A3B-Instruct (config only)", shapes)
    sizes = {bits: build_plan(ckpt, adapter, resolve_profile(adapter, bits=bits, profile=None)).predicted_bytes
             for bits in (8, 4, 2)}
    assert sizes[8] > sizes[4] > sizes[2] and 16 * 2**30 < sizes[4] < 19 * 2**30, sizes
    hp = adapter.gguf_hparams()
    assert hp["rope_dimension_sections"] == [24, 20, 20, 0] and hp["num_deepstack_layers"] == 3
    proj = adapter.gguf_projector()
    assert proj.hparams["vision_image_size"] == 768 and sum(proj.hparams["vision_is_deepstack_layers"]) == 3


# -- GGUF + vision projector in the real llama.cpp ---------------------------------------------------

@pytest.fixture(scope="module")
def ggufs(model, calib, tmp_path_factory):
    root = tmp_path_factory.mktemp("vlgguf")
    return {f"w{b}": quantize(QuantizeOptions(model=str(model), out=root / f"w{b}", bits=b, format="gguf",
                                              calib=calib[0])) for b in (8, 4)}


def test_gguf_and_projector_files(ggufs):
    import gguf

    from quantkit.formats.gguf.variant import gguf_file

    v = ggufs["w4"]
    manifest = json.loads((v / "quantkit.json").read_text())
    mm = manifest["gguf"]["mmproj"]
    assert manifest["gguf"]["arch"] == "qwen3vlmoe" and mm["projector_type"] == "qwen3vl_merger"
    fields = gguf.GGUFReader(gguf_file(v)).fields
    assert list(fields["qwen3vlmoe.rope.dimension_sections"].contents()) == [12, 10, 10, 0]
    assert fields["qwen3vlmoe.n_deepstack_layers"].contents() == 2
    proj = gguf.GGUFReader(v / mm["file"])
    pf = proj.fields
    assert pf["general.architecture"].contents() == "clip" and pf["clip.projector_type"].contents() == "qwen3vl_merger"
    names = {t.name for t in proj.tensors}
    assert {"v.patch_embd.weight", "v.patch_embd.weight.1", "mm.0.weight", "v.deepstack.1.fc2.weight"} <= names
    # the vision tower read back from the projector file is the source's, bit for bit
    state = dequantized_state_dict(v)
    raw = Checkpoint.open(manifest["source"]["id"])
    for n in ("model.visual.patch_embed.proj.weight", "model.visual.deepstack_merger_list.1.norm.bias"):
        assert torch.equal(state[n], raw.read(n))
    report = verify(v, runtimes=("all",))
    assert report.integrity_ok and report.servable, report.lines()
    assert report.check("llama.cpp.mmproj").passed


def _llama(v):
    pytest.importorskip("llama_cpp")
    from quantkit.formats.gguf.variant import gguf_file

    return open_llama(gguf_file(v), logits_all=True, n_ctx=256, n_threads=1, n_batch=256, verbose=False)


NEAR_TIE = 2e-3  # a router whose k-th and (k+1)-th probabilities are closer picks other experts on noise


def logprobs_and_router_gaps(m, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of a quantkit-loaded Qwen3-VL-MoE and, per position, the smallest top-k margin of its routers."""
    gaps = []

    def hook(router, inputs, output):
        s = torch.softmax(output[0].float(), -1).sort(-1, descending=True).values
        gaps.append(s[:, router.top_k - 1] - s[:, router.top_k])

    handles = [layer.mlp.gate.register_forward_hook(hook) for layer in m.model.language_model.layers]
    with torch.no_grad():
        out = torch.log_softmax(m(**inputs).logits[0].double(), -1)
    for h in handles:
        h.remove()
    return out, torch.stack(gaps).min(0).values


@pytest.mark.parametrize("name", ["w8", "w4"])
def test_llama_cpp_runs_the_language_model_per_position(model, ggufs, name):
    """As tests/test_llama_cpp.py: KL <= 1e-4 on >= 90 % of the positions that are not router near ties,
    median under ERNIE's 2e-5, and at most one position over the bound that is not a near tie. This
    untrained model's routers are close to uniform: with Q4_K experts (llama.cpp quantizes the
    activations per 256 for them, per 32 for Q4_0) 7 of 64 positions pick other experts, all near ties
    (margin <= 1.4e-3). 64 positions: this model's llama.cpp/transformers gap grows with position
    (median 1e-5 over 64, 2e-5 over 96 at Q8_0; the same with the file relabelled qwen3moe, so not
    llama.cpp's M-RoPE)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(model))(" ".join(CORPUS[:20])).input_ids[:64]
    hf, gap = logprobs_and_router_gaps(quantkit.load(ggufs[name]), input_ids=torch.tensor([ids]))
    llm = _llama(ggufs[name])
    llm.eval(ids)
    ll = torch.log_softmax(torch.from_numpy(np.array(llm.scores[:len(ids)], dtype=np.float64)), -1)
    llm.close()
    per_pos = (hf.exp() * (hf - ll)).sum(-1)
    over = (per_pos > 1e-4).nonzero().flatten().tolist()
    print(f"\nllama.cpp vs quantkit, Qwen3-VL-MoE {name} text: median {per_pos.median():.2e}, "
          f"over 1e-4 at {[(i, round(float(gap[i]), 5)) for i in over]} (position, router gap)")
    assert (per_pos[gap >= NEAR_TIE] <= 1e-4).float().mean() >= 0.9 and per_pos.median() < 2e-5
    assert sum(1 for i in over if gap[i] >= NEAR_TIE) <= 1


def llama_cpp_image_logprobs(v, prompt: str, image) -> tuple[list, torch.Tensor]:
    """llama.cpp with the image through mtmd (the projector file): the chunks mtmd makes of the prompt
    (`<__media__>` where the image goes) and the log-probs at every text token."""
    import llama_cpp
    mtmd = pytest.importorskip("llama_cpp.mtmd_cpp")
    mm = v / json.loads((v / "quantkit.json").read_text())["gguf"]["mmproj"]["file"]
    llm = _llama(v)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings = False, 1, False
    ctx = mtmd.mtmd_init_from_file(str(mm).encode(), llm.model, params)
    assert ctx and mtmd.mtmd_support_vision(ctx)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    bitmap = mtmd.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], (ctypes.c_uint8 * rgb.size).from_buffer_copy(rgb.tobytes()))
    text = prompt.encode()
    inp = mtmd.mtmd_input_text()
    inp.text, inp.text_len, inp.add_special, inp.parse_special = text, len(text), True, True
    chunks = mtmd.mtmd_input_chunks_init()
    assert mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(inp), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
    rows, logits = [], []
    for i in range(mtmd.mtmd_input_chunks_size(chunks)):
        chunk = mtmd.mtmd_input_chunks_get(chunks, i)
        if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ctypes.c_size_t()
            ptr = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
            tokens = [ptr[j] for j in range(n.value)]
            start = llm.n_tokens
            llm.eval(tokens)
            logits.append(np.array(llm.scores[start:start + len(tokens)], dtype=np.float64))
            rows.append(("text", tokens))
        else:  # the image: encoded by the projector, decoded with M-RoPE positions
            new_n_past = llama_cpp.llama_pos(0)
            assert mtmd.mtmd_helper_eval_chunk_single(ctx, llm._ctx.ctx, chunk, llm.n_tokens, 0, 256, False,
                                                      ctypes.byref(new_n_past)) == 0
            llm.n_tokens = new_n_past.value
            rows.append(("image", mtmd.mtmd_input_chunk_get_n_tokens(chunk)))
    mtmd.mtmd_input_chunks_free(chunks)
    mtmd.mtmd_bitmap_free(bitmap)
    mtmd.mtmd_free(ctx)
    llm.close()
    return rows, torch.log_softmax(torch.from_numpy(np.concatenate(logits)), -1)


def test_llama_cpp_runs_an_image_through_the_projector(model, ggufs):
    """An image of 128 x 96 px (whole 32-px merge blocks within both processors' pixel limits, so neither
    resizes it) through llama.cpp's mtmd and through quantkit's decoding of the same variant: the text
    after the image agrees position by position, and a different image is far from both."""
    from transformers import AutoProcessor

    v = ggufs["w4"]
    processor = AutoProcessor.from_pretrained(str(model))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shapes are there?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image, other = synthetic_image(3, size=(128, 96)), synthetic_image(11, size=(128, 96))
    rows, ll = llama_cpp_image_logprobs(v, text.replace("<|vision_start|><|image_pad|><|vision_end|>", "<__media__>"),
                                        image)
    m = quantkit.load(v)
    hf, gaps = {}, {}
    for key, img in (("same", image), ("other", other)):
        batch = processor(text=[text], images=[img], return_tensors="pt")
        hf[key], gaps[key] = logprobs_and_router_gaps(m, **batch)
    ids = batch["input_ids"][0].tolist()
    positions, pos = [], 0  # the text tokens of the HF sequence, in llama.cpp's chunk order
    for row in rows:
        if row[0] == "text":
            assert ids[pos:pos + len(row[1])] == row[1]  # same tokens around the image
            positions += list(range(pos, pos + len(row[1])))
            pos += len(row[1])
        else:
            assert row[1] == 12  # 96 x 128 px -> 6 x 8 patches of 16 px -> 3 x 4 merged tokens
            pos += row[1]
    assert pos == len(ids)
    after = slice(len(rows[0][1]), None)
    same = (hf["same"][positions].exp() * (hf["same"][positions] - ll)).sum(-1)[after]
    other_kl = (hf["other"][positions].exp() * (hf["other"][positions] - ll)).sum(-1)[after]
    gap = gaps["same"][positions][after]
    print(f"\nllama.cpp (mtmd) vs quantkit after the image: median {same.median():.2e} (other image "
          f"{other_kl.median():.2e}); over 1e-3 at router gaps {gap[same > 1e-3].tolist()}")
    assert same.median() < 1e-4 and (same[gap >= NEAR_TIE] <= 1e-3).float().mean() >= 0.9
    assert other_kl.median() > 100 * same.median()
