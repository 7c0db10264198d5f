"""Tiny ERNIE-4.5 reference checkpoints, built offline with the real transformers classes.

Tests, ``make demo`` and the benchmarks need checkpoints that look like the Hub ones on disk but fit in
a few MB and run in milliseconds on a CPU. Both builders instantiate the real model class
(``Ernie4_5_VLMoeForConditionalGeneration`` / ``Ernie4_5_MoeForCausalLM``) and write it with
``save_pretrained``, so keys, shapes and sharding are what transformers (and the Hub) produce. Weights
are float32: the tiny models' source dtype (the real ones are bfloat16). The same seed gives
byte-identical safetensors.

On-disk layout of the tiny VL model (``build_tiny_vl``), as in ``baidu/ERNIE-4.5-VL-28B-A3B-PT``:
- ``model-0000x-of-0000y.safetensors`` + ``model.safetensors.index.json``;
- ``model.embed_tokens.weight`` (tied to the output head, so no ``lm_head.weight``), ``model.norm.weight``;
- layer 0 dense: ``model.layers.0.mlp.{gate,up,down}_proj.weight``;
- MoE layers: ``model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight`` with text experts K < E
  ([I_text, H] gate/up) and vision experts E <= K < 2E (narrower [I_vision, H]); routers stored transposed
  as ``mlp.gate.weight`` (text) and ``mlp.gate.weight_1`` (vision), both [H, E]; the routing bias
  ``mlp.moe_statics.e_score_correction_bias`` [2, E] (text row, vision row);
  ``mlp.shared_experts.{gate,up,down}_proj.weight``;
- ``model.vision_model.*`` (ViT: ``patch_embed.proj``, ``blocks.N.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2,
  norm1,norm2}``, ``ln``) and ``model.resampler_model.*`` (``spatial_linear.{0,2,3}``,
  ``temporal_linear.{0,2,3}``, ``mlp``, ``after_norm``).

On-disk layout of the tiny text MoE (``build_tiny_text_moe``), as in ``baidu/ERNIE-4.5-21B-A3B-PT``:
``model.layers.0.mlp.{gate,up,down}_proj.weight`` (dense), then per MoE layer
``model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight`` (K < E), the router ``mlp.gate.weight``
[E, H] (not transposed, unlike the VL model), ``mlp.moe_statics.e_score_correction_bias`` [1, E] and
``mlp.shared_experts.*``; embeddings tied.

Sizes (chosen small, but keeping the real structure; see ``VL_SIZES`` / ``TEXT_MOE_SIZES``):
- VL text: hidden 128, 4 heads x 32, 2 KV heads, 3 layers (dense, sparse, sparse), dense intermediate
  256, 8 + 8 experts top-2 with intermediate [64, 32], 1 shared expert, M-RoPE sections [6, 6, 4]
  (sum = head_dim / 2, h = w as the real [22, 22, 20]). Vision: depth 2, hidden 64, 2 heads,
  intermediate 256 (the real MLP ratio 4, which the remote-code config stores), patch 14, spatial
  merge 2. Images of 56..112 px give 16..64 patches (4..16 image tokens).
- Text MoE: hidden 256, 4 heads x 64, 2 KV heads, 3 layers (layer 0 dense, intermediate 512), 8 experts
  top-2 with intermediate 256, 2 shared experts: every weight row is a multiple of 256, so llama.cpp
  K-quants apply.

Token ids come from the offline tokenizer (``quantkit.reference.tokenizer``); the vocabulary size is
padded to a multiple of 64.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Ernie4_5_MoeConfig,
    Ernie4_5_MoeForCausalLM,
    Ernie4_5_VLMoeConfig,
    Ernie4_5_VLMoeForConditionalGeneration,
    Ernie4_5_VLMoeImageProcessor,
    Ernie4_5_VLMoeProcessor,
    Ernie4_5_VLMoeVideoProcessor,
    PreTrainedModel,
)

from quantkit.adapters.ernie45_vl import REMOTE_AUTO_MAP
from quantkit.reference.tokenizer import (
    TEXT_CHAT_TEMPLATE,
    build_ernie_tokenizer,
    padded_vocab_size,
    vl_chat_template,
)

FLAVOURS = ("native", "remote")

VL_SIZES = {
    "hidden_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "intermediate_size": 256,
    "moe_num_experts": 8,
    "moe_k": 2,
    "moe_intermediate_size": [64, 32],
    "moe_num_shared_experts": 1,
    "mrope_section": [6, 6, 4],
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_num_heads": 2,
    "vision_intermediate_size": 256,
}
TEXT_MOE_SIZES = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 3,
    "intermediate_size": 512,
    "moe_num_experts": 8,
    "moe_k": 2,
    "moe_intermediate_size": 256,
    "moe_num_shared_experts": 2,
    "moe_layer_start_index": 1,  # a dense first layer, as the real checkpoints
}
# Image processor pixel budget: 56x56 .. 112x112 (the real processor allows up to 28*28*6177).
IMAGE_MIN_PIXELS = 56 * 56
IMAGE_MAX_PIXELS = 112 * 112
ROPE_THETA = 500000.0
# Std of the random routing bias: small, but enough to change some top-k choices.
ROUTER_BIAS_STD = 0.01

# Text fields the remote-code flavour keeps flat at the top level, under the same names.
_FLAT_TEXT_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "use_bias",
    "use_cache",
)


def build_tiny_vl(
    out_dir: str | Path, *, seed: int = 0, max_shard_size: str = "200KB", flavour: str = "native"
) -> Path:
    """Build and save a tiny ``Ernie4_5_VLMoeForConditionalGeneration`` with tokenizer and processor.

    ``out_dir`` gets the sharded float32 safetensors, ``config.json``, ``generation_config.json``,
    ``tokenizer.model`` + ``tokenizer.json``/``tokenizer_config.json`` and the processor files
    (``processor_config.json``, ``chat_template.jinja``), loadable offline with ``from_pretrained`` /
    ``AutoProcessor.from_pretrained``. ``flavour="remote"`` writes the same weights and processor but the
    flat remote-code ``config.json`` of the -Thinking repo (``remote_code_config``) and a chat template
    that thinks by default; its python files are not shipped, so only the config describes it.
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    out_dir = Path(out_dir)
    template = vl_chat_template(thinking_by_default=flavour == "remote")
    tokenizer = build_ernie_tokenizer(out_dir, template, multimodal=True)
    tiny_vl_model(tokenizer, seed=seed).save_pretrained(out_dir, max_shard_size=max_shard_size)
    _tiny_vl_processor(tokenizer).save_pretrained(out_dir)
    if flavour == "remote":
        native = json.loads((out_dir / "config.json").read_text())
        _write_json(out_dir / "config.json", remote_code_config(native))
    return out_dir


def build_tiny_text_moe(out_dir: str | Path, *, seed: int = 0, max_shard_size: str = "500KB") -> Path:
    """Build and save a tiny ``Ernie4_5_MoeForCausalLM`` (ERNIE-4.5-21B-A3B architecture) with tokenizer.

    ``out_dir`` gets the sharded float32 safetensors, ``config.json``, ``generation_config.json``, the
    SentencePiece ``tokenizer.model`` and the transformers tokenizer files with the ERNIE chat template.
    """
    out_dir = Path(out_dir)
    tokenizer = build_ernie_tokenizer(out_dir, TEXT_CHAT_TEMPLATE, multimodal=False)
    tiny_text_moe_model(tokenizer, seed=seed).save_pretrained(out_dir, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def tiny_vl_model(tokenizer, *, seed: int = 0) -> Ernie4_5_VLMoeForConditionalGeneration:
    """The in-memory model ``build_tiny_vl`` saves, for a tokenizer with ERNIE's multimodal tokens."""
    return _seeded_model(Ernie4_5_VLMoeForConditionalGeneration, vl_config(tokenizer), tokenizer, seed)


def tiny_text_moe_model(tokenizer, *, seed: int = 0) -> Ernie4_5_MoeForCausalLM:
    """The in-memory model ``build_tiny_text_moe`` saves."""
    return _seeded_model(Ernie4_5_MoeForCausalLM, text_moe_config(tokenizer), tokenizer, seed)


def remote_code_config(native_config: dict) -> dict:
    """Turn a native nested ``ernie4_5_vl_moe`` config dict into the flat remote-code flavour.

    Field names follow the real remote-code config (``quantkit.adapters.real_config("ERNIE-4.5-VL-28B-A3B",
    "remote")``); values come from ``native_config``.
    Raises ``ValueError`` where the flat format cannot express the native one (MoE layers that are not
    one contiguous span, M-RoPE sections other than [s, s, freq_allocation]).
    """
    text, vision = native_config["text_config"], native_config["vision_config"]
    start, end = _moe_layer_span(text["mlp_layer_types"])
    experts = text["moe_num_experts"]
    image_token_id = native_config["image_token_id"]
    return {
        "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
        "auto_map": dict(REMOTE_AUTO_MAP),
        "model_type": "ernie4_5_moe_vl",
        "torch_dtype": native_config.get("dtype", "bfloat16"),
        **{key: text[key] for key in _FLAT_TEXT_KEYS},
        "use_rmsnorm": True,
        "tie_word_embeddings": native_config.get("tie_word_embeddings", True),
        **{key: text[key] for key in ("pad_token_id", "bos_token_id", "eos_token_id") if text.get(key) is not None},
        "rope_theta": text["rope_parameters"]["rope_theta"],
        "rope_3d": True,
        "freq_allocation": _freq_allocation(text),
        "moe_num_experts": [experts, experts],
        "moe_intermediate_size": list(text["moe_intermediate_size"]),
        "moe_k": text["moe_k"],
        "moe_num_shared_experts": text["moe_num_shared_experts"],
        "moe_layer_start_index": [start, start],
        "moe_layer_end_index": [end, end],
        "moe_layer_interval": 1,
        "moe_use_aux_free": True,
        "im_patch_id": image_token_id,
        "max_text_id": image_token_id,
        "pixel_hidden_size": vision["hidden_size"],
        "spatial_conv_size": vision["spatial_merge_size"],
        "temporal_conv_size": vision["temporal_merge_size"],
        "use_temporal_conv": True,
        "vision_config": _remote_vision_config(vision),
    }


def _moe_layer_span(mlp_layer_types: list[str]) -> tuple[int, int]:
    sparse = [i for i, kind in enumerate(mlp_layer_types) if kind == "sparse"]
    if not sparse or sparse != list(range(sparse[0], sparse[-1] + 1)):
        raise ValueError(f"remote-code configs need one contiguous span of MoE layers, got {mlp_layer_types}")
    return sparse[0], sparse[-1]


def _freq_allocation(text: dict) -> int:
    # Remote code (and vLLM) rebuild the sections as [h, h, freq_allocation] from the head size.
    h, w, t = text["rope_parameters"]["mrope_section"]
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    if h != w or h + w + t != head_dim // 2:
        raise ValueError(f"mrope_section {[h, w, t]} is not [s, s, freq_allocation] for head_dim {head_dim}")
    return t


def _remote_vision_config(vision: dict) -> dict:
    hidden = vision["hidden_size"]
    if vision["intermediate_size"] % hidden:
        raise ValueError(f"vision intermediate_size {vision['intermediate_size']} is not an mlp_ratio x {hidden}")
    return {
        "model_type": "DFNRope_vision_transformer",
        "depth": vision["depth"],
        "embed_dim": hidden,
        "hidden_size": hidden,
        "hidden_act": vision["hidden_act"],
        "mlp_ratio": vision["intermediate_size"] // hidden,
        "num_heads": vision["num_heads"],
        "in_channels": vision["in_channels"],
        "patch_size": vision["patch_size"],
        "spatial_patch_size": vision["patch_size"],
        "spatial_merge_size": vision["spatial_merge_size"],
        "attn_implementation": "eager",
    }


def vl_config(tokenizer, sizes: dict = VL_SIZES) -> Ernie4_5_VLMoeConfig:
    """A small ERNIE-4.5-VL config of the given sizes, with the tokenizer's special-token ids."""
    s = sizes
    text_config = {
        "vocab_size": padded_vocab_size(tokenizer),
        "hidden_size": s["hidden_size"],
        "intermediate_size": s["intermediate_size"],
        "num_hidden_layers": s["num_hidden_layers"],
        "num_attention_heads": s["num_attention_heads"],
        "num_key_value_heads": s["num_key_value_heads"],
        "max_position_embeddings": 131072,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": s["mrope_section"]},
        "mlp_layer_types": ["dense"] + ["sparse"] * (s["num_hidden_layers"] - 1),
        "moe_intermediate_size": s["moe_intermediate_size"],
        "moe_k": s["moe_k"],
        "moe_num_experts": s["moe_num_experts"],
        "moe_num_shared_experts": s["moe_num_shared_experts"],
        **_special_ids(tokenizer),
    }
    vision_config = {
        "depth": s["vision_depth"],
        "hidden_size": s["vision_hidden_size"],
        "num_heads": s["vision_num_heads"],
        "intermediate_size": s["vision_intermediate_size"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_merge_size": 2,
    }
    return Ernie4_5_VLMoeConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tokenizer.image_token_id,
        image_start_token_id=tokenizer.image_start_token_id,
        image_end_token_id=tokenizer.image_end_token_id,
        video_token_id=tokenizer.video_token_id,
        video_start_token_id=tokenizer.video_start_token_id,
        video_end_token_id=tokenizer.video_end_token_id,
    )


def text_moe_config(tokenizer, sizes: dict = TEXT_MOE_SIZES) -> Ernie4_5_MoeConfig:
    """A small ERNIE-4.5 text MoE config of the given sizes (this module's tiny model, the trained text
    reference), with the tokenizer's special-token ids."""
    s = sizes
    return Ernie4_5_MoeConfig(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"],
        max_position_embeddings=131072,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        moe_num_experts=s["moe_num_experts"],
        moe_k=s["moe_k"],
        moe_intermediate_size=s["moe_intermediate_size"],
        moe_num_shared_experts=s["moe_num_shared_experts"],
        moe_layer_start_index=s["moe_layer_start_index"],
        moe_layer_end_index=s["num_hidden_layers"] - 1,
        moe_layer_interval=1,
        moe_use_aux_free=True,
        use_bias=False,
        tie_word_embeddings=True,
        **_special_ids(tokenizer),
    )


def _tiny_vl_processor(tokenizer) -> Ernie4_5_VLMoeProcessor:
    size = {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}
    # No timestamps drawn on video frames: that needs a font file (Roboto-Regular.ttf), which the
    # processor would otherwise expect next to its config when loading.
    video_processor = Ernie4_5_VLMoeVideoProcessor(size=size, min_frames=2, max_frames=8, draw_on_frames=False)
    return Ernie4_5_VLMoeProcessor(
        image_processor=Ernie4_5_VLMoeImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=tokenizer.chat_template,
    )


def _special_ids(tokenizer) -> dict[str, int]:
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _set_generation_ids(model: PreTrainedModel, tokenizer) -> None:
    # A chat turn ends with <|end_of_sentence|>, so generation must stop there as well as at </s>.
    generation = model.generation_config
    generation.bos_token_id = tokenizer.bos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = [tokenizer.eos_token_id, tokenizer.sep_token_id]


def _seeded_model(model_cls: type[PreTrainedModel], config, tokenizer, seed: int) -> PreTrainedModel:
    """Instantiate with transformers' default init under ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    _randomize_router_bias(model, seed)
    _set_generation_ids(model, tokenizer)
    return model.eval()


def _randomize_router_bias(model: PreTrainedModel, seed: int) -> None:
    # transformers initialises e_score_correction_bias to zero; real checkpoints carry a learned bias,
    # and code that drops or mis-orders it must change the routing.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                param.copy_(torch.randn(param.shape, generator=generator) * ROUTER_BIAS_STD)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
