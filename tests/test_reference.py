"""The tiny reference checkpoints: Hub layout, offline processor, determinism, remote-code config."""

import json
import re

import numpy as np
import pytest
import sentencepiece as spm
import torch
from PIL import Image
from safetensors import safe_open
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    Ernie4_5_MoeConfig,
    Ernie4_5_MoeForCausalLM,
    Ernie4_5_VLMoeConfig,
    Ernie4_5_VLMoeForConditionalGeneration,
)

from quantkit.adapters import real_config
from quantkit.reference import tiny

INDEX = "model.safetensors.index.json"


def _tensors(model_dir):
    weight_map = json.loads((model_dir / INDEX).read_text())["weight_map"]
    out = {}
    for shard in sorted(set(weight_map.values())):
        with safe_open(model_dir / shard, "pt") as f:
            out.update({name: f.get_tensor(name) for name in f.keys()})
    assert sorted(out) == sorted(weight_map)
    return out


def _shards(model_dir):
    return sorted(model_dir.glob("model-*-of-*.safetensors"))


def _image_messages():
    image = Image.new("RGB", (84, 60), (200, 40, 40))
    image.paste((20, 60, 220), (10, 10, 40, 40))
    return [{"role": "user", "content": [{"type": "image", "image": image},
                                         {"type": "text", "text": "Describe this picture."}]}]


@pytest.fixture(scope="module")
def vl_inputs(tiny_vl):
    processor = AutoProcessor.from_pretrained(tiny_vl)
    batch = processor.apply_chat_template(_image_messages(), add_generation_prompt=True, tokenize=True,
                                          return_dict=True, return_tensors="pt")
    return processor, batch


def test_tiny_vl_is_sharded_with_the_hub_layout(tiny_vl):
    shards = _shards(tiny_vl)
    assert len(shards) > 1 and all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", s.name) for s in shards)
    config = json.loads((tiny_vl / "config.json").read_text())
    text = config["text_config"]
    e, (i_text, i_vision), h = text["moe_num_experts"], text["moe_intermediate_size"], text["hidden_size"]
    assert text["mlp_layer_types"] == ["dense", "sparse", "sparse"]
    t = _tensors(tiny_vl)
    assert {v.dtype for v in t.values()} == {torch.float32}
    assert "lm_head.weight" not in t  # tied to the embeddings, as in the Hub repo
    assert t["model.embed_tokens.weight"].shape == (text["vocab_size"], h)
    assert t["model.layers.0.mlp.gate_proj.weight"].shape == (text["intermediate_size"], h)
    assert not any(k.startswith("model.layers.0.mlp.experts.") for k in t)
    for layer in (1, 2):
        p = f"model.layers.{layer}.mlp."
        experts = {int(m[1]) for k in t if (m := re.match(re.escape(p) + r"experts\.(\d+)\.", k))}
        assert experts == set(range(2 * e))
        for k, inter in ((0, i_text), (e - 1, i_text), (e, i_vision), (2 * e - 1, i_vision)):
            assert t[f"{p}experts.{k}.gate_proj.weight"].shape == (inter, h)
            assert t[f"{p}experts.{k}.up_proj.weight"].shape == (inter, h)
            assert t[f"{p}experts.{k}.down_proj.weight"].shape == (h, inter)
        assert t[p + "gate.weight"].shape == (h, e)  # routers stored transposed
        assert t[p + "gate.weight_1"].shape == (h, e)
        bias = t[p + "moe_statics.e_score_correction_bias"]
        assert bias.shape == (2, e) and bias.abs().min() > 0 and not torch.equal(bias[0], bias[1])
        assert t[p + "shared_experts.gate_proj.weight"].shape == (i_text * text["moe_num_shared_experts"], h)
    assert any(k.startswith("model.vision_model.blocks.") for k in t)
    assert any(k.startswith("model.resampler_model.") for k in t)


def test_tiny_vl_reloads_with_the_in_memory_logits(tiny_vl, vl_inputs):
    processor, batch = vl_inputs
    built = tiny.tiny_vl_model(processor.tokenizer, seed=0)
    loaded = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(tiny_vl).eval()
    assert loaded.dtype == torch.float32
    with torch.no_grad():
        expected, got = built(**batch).logits, loaded(**batch).logits
    assert torch.equal(expected, got)
    assert got.isfinite().all() and got[0, -1].std() > 0.05  # not a degenerate model


def test_processor_round_trip_offline(tiny_vl, vl_inputs):
    processor, batch = vl_inputs
    config = Ernie4_5_VLMoeConfig.from_pretrained(tiny_vl)
    tok = processor.tokenizer
    assert (tok.image_token_id, tok.image_start_token_id, tok.image_end_token_id) == \
        (config.image_token_id, config.image_start_token_id, config.image_end_token_id)
    assert (tok.video_token_id, tok.video_start_token_id, tok.video_end_token_id) == \
        (config.video_token_id, config.video_start_token_id, config.video_end_token_id)
    assert len(tok) <= config.text_config.vocab_size
    assert not list(tiny_vl.glob("*.ttf"))  # no font needed: no timestamps drawn on video frames

    ids = batch["input_ids"][0]
    image = ids == config.image_token_id
    merge = processor.image_processor.merge_size
    assert int(image.sum()) == int(batch["image_grid_thw"].prod()) // merge**2 > 1
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"].prod())
    assert torch.equal(batch["mm_token_type_ids"][0].bool(), image)
    vision = image | (ids == config.image_start_token_id) | (ids == config.image_end_token_id)
    assert torch.equal(batch["moe_mm_token_type_ids"][0], vision.long())  # MoE routes start/end as vision too

    model = Ernie4_5_VLMoeForConditionalGeneration.from_pretrained(tiny_vl).eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (1, ids.numel(), config.text_config.vocab_size) and logits.isfinite().all()

    frames = np.random.default_rng(0).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    video_messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(video_messages, tokenize=False, add_generation_prompt=True)
    video = processor(text=[prompt], videos=[frames], do_sample_frames=False, return_tensors="pt")
    assert int((video["moe_mm_token_type_ids"] == 2).sum()) > 2
    with torch.no_grad():
        assert model(**video).logits.isfinite().all()


def test_chat_templates_follow_ernie(tiny_vl, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_vl)
    prompt = processor.apply_chat_template(_image_messages(), tokenize=False, add_generation_prompt=True)
    assert prompt == ("<|begin_of_sentence|>User: Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
                      "Describe this picture.\nAssistant: <think>\n\n</think>\n\n")
    thinking = processor.apply_chat_template(_image_messages(), tokenize=False, add_generation_prompt=True,
                                             enable_thinking=True)
    assert thinking.endswith("\nAssistant: <think>")
    turns = [*_image_messages(), {"role": "assistant", "content": "<think>\nred\n</think>\n\nA red picture."}]
    rendered = processor.apply_chat_template(turns, tokenize=False)
    assert rendered.endswith("\nAssistant: <think>\nred\n</think>\n\nA red picture.<|end_of_sentence|>")

    remote = tiny.build_tiny_vl(tmp_path / "remote", flavour="remote")
    remote_tok = AutoTokenizer.from_pretrained(remote)
    messages = [{"role": "user", "content": "Hi"}]
    assert remote_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True).endswith(
        "Assistant: <think>")  # the -Thinking model thinks unless told not to


def test_same_seed_gives_identical_files_and_flavours_share_weights(tiny_vl, tmp_path):
    again = tiny.build_tiny_vl(tmp_path / "again", seed=0, flavour="remote")
    assert [s.name for s in _shards(again)] == [s.name for s in _shards(tiny_vl)]
    for a, b in zip(_shards(again), _shards(tiny_vl)):
        assert a.read_bytes() == b.read_bytes()
    assert (again / INDEX).read_text() == (tiny_vl / INDEX).read_text()
    assert (again / "tokenizer.model").read_bytes() == (tiny_vl / "tokenizer.model").read_bytes()
    assert json.loads((again / "config.json").read_text())["model_type"] == "ernie4_5_moe_vl"

    other = _tensors(tiny.build_tiny_vl(tmp_path / "seed1", seed=1))
    base = _tensors(tiny_vl)
    assert not torch.equal(other["model.layers.1.mlp.experts.0.up_proj.weight"],
                           base["model.layers.1.mlp.experts.0.up_proj.weight"])


def test_remote_code_config_is_flat(tiny_vl):
    native = json.loads((tiny_vl / "config.json").read_text())
    remote = tiny.remote_code_config(native)
    text, vision = native["text_config"], native["vision_config"]
    e = text["moe_num_experts"]
    assert remote["model_type"] == "ernie4_5_moe_vl" and "text_config" not in remote
    assert remote["moe_num_experts"] == [e, e]
    assert remote["moe_intermediate_size"] == text["moe_intermediate_size"]
    assert (remote["moe_layer_start_index"], remote["moe_layer_end_index"]) == ([1, 1], [2, 2])
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "moe_k", "moe_num_shared_experts"):
        assert remote[key] == text[key], key
    assert remote["im_patch_id"] == native["image_token_id"]
    assert (remote["spatial_conv_size"], remote["temporal_conv_size"]) == (2, 2)
    assert remote["pixel_hidden_size"] == vision["hidden_size"] == remote["vision_config"]["embed_dim"]
    assert remote["vision_config"]["mlp_ratio"] * vision["hidden_size"] == vision["intermediate_size"]
    assert remote["freq_allocation"] == text["rope_parameters"]["mrope_section"][2]
    assert set(real_config("ERNIE-4.5-VL-28B-A3B", "remote")) - set(remote) <= {
        "moe_capacity", "moe_multimodal_dispatch_use_allgather"}  # training-only fields
    assert {"AutoConfig", "AutoModelForCausalLM"} <= set(remote["auto_map"])

    bad = json.loads(json.dumps(native))
    bad["text_config"]["mlp_layer_types"] = ["sparse", "dense", "sparse"]
    with pytest.raises(ValueError, match="contiguous"):
        tiny.remote_code_config(bad)


def test_real_configs_agree_and_have_the_published_sizes():
    derived = tiny.remote_code_config(real_config("ERNIE-4.5-VL-28B-A3B", "native"))
    real = real_config("ERNIE-4.5-VL-28B-A3B", "remote")
    shared = set(derived) & set(real) - {"moe_layer_end_index"}  # the Hub file says [29, 28] for 28 layers
    assert {k: derived[k] for k in shared} == {k: real[k] for k in shared}

    with torch.device("meta"):
        vl = Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig(**real_config("ERNIE-4.5-VL-28B-A3B")))
        text = Ernie4_5_MoeForCausalLM(Ernie4_5_MoeConfig(**real_config("ERNIE-4.5-21B-A3B")))
    # Hub safetensors totals: 29.4B (ERNIE-4.5-VL-28B-A3B) and 21.8B (ERNIE-4.5-21B-A3B).
    assert sum(p.numel() for p in vl.parameters()) == pytest.approx(29.4e9, rel=0.005)
    assert sum(p.numel() for p in text.parameters()) == pytest.approx(21.8e9, rel=0.005)


def test_tiny_text_moe(tiny_text):
    assert len(_shards(tiny_text)) > 1
    config = json.loads((tiny_text / "config.json").read_text())
    e, h = config["moe_num_experts"], config["hidden_size"]
    t = _tensors(tiny_text)
    assert "model.layers.0.mlp.down_proj.weight" in t and "model.layers.0.mlp.gate.weight" not in t
    for layer in (1, 2):
        p = f"model.layers.{layer}.mlp."
        assert t[p + "gate.weight"].shape == (e, h)
        assert t[p + "moe_statics.e_score_correction_bias"].shape == (1, e)
        assert {int(m[1]) for k in t if (m := re.match(re.escape(p) + r"experts\.(\d+)\.", k))} == set(range(e))
        assert p + "shared_experts.down_proj.weight" in t
    # llama.cpp K-quants need rows that are multiples of 256
    assert all(w.shape[-1] % 256 == 0 for k, w in t.items() if w.ndim == 2 and k.endswith(".weight"))

    tokenizer = AutoTokenizer.from_pretrained(tiny_text)
    loaded = Ernie4_5_MoeForCausalLM.from_pretrained(tiny_text).eval()
    built = tiny.tiny_text_moe_model(tokenizer, seed=0)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "How many apples? 你好"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt == "<|begin_of_sentence|>User: How many apples? 你好\nAssistant: "
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(built(ids).logits, loaded(ids).logits)
    assert json.loads((tiny_text / "generation_config.json").read_text())["eos_token_id"] == [
        tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|end_of_sentence|>")]

    sp = spm.SentencePieceProcessor(model_file=str(tiny_text / "tokenizer.model"))
    assert sp.vocab_size() > 300 and sp.id_to_piece(0) == "<unk>" and sp.piece_to_id("<0x41>") > 0
    text = "She bought 12 apples. 今天天气很好。"
    pieces = sp.encode(text, out_type=str)
    assert sp.decode(pieces) == text and len(pieces) < len(text)  # merges learned, not just bytes
    assert tokenizer.decode(tokenizer(text).input_ids) == text
