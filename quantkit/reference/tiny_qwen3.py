"""Tiny Qwen3-MoE and Qwen3-VL-MoE reference checkpoints, built offline with the real transformers classes.

Both builders instantiate the real class (``Qwen3MoeForCausalLM`` / ``Qwen3VLMoeForConditionalGeneration``)
with transformers' own initialisation under a seed, and write it with ``save_pretrained`` (float32, sharded),
then bring it to the layout of the Hub repos:

- ``build_tiny_qwen3_moe`` (as ``Qwen/Qwen3-30B-A3B``): ``save_pretrained`` already writes the Hub layout,
  per-expert ``model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight`` [I, H] / [H, I] (transformers'
  conversion ``qwen2_moe``: MergeModulelist when loading, its reverse when saving), the router
  ``mlp.gate.weight`` [E, H], attention with ``self_attn.{q,k}_norm.weight`` [head_dim], no dense layer,
  untied ``lm_head.weight``.
- ``build_tiny_qwen3_vl_moe`` (as ``Qwen/Qwen3-VL-30B-A3B-Instruct``): the language model under
  ``model.language_model.*``, the vision tower under ``model.visual.*`` (``patch_embed.proj`` Conv3d,
  ``pos_embed``, ``blocks.N.{norm1,norm2,attn.qkv,attn.proj,mlp.linear_fc1,mlp.linear_fc2}``, ``merger.*``,
  ``deepstack_merger_list.N.*``), ``lm_head.weight``; experts FUSED per layer in the Hub's transposed
  layout ``mlp.experts.gate_up_proj`` [E, H, 2I] (gate = [..., :I], up = [..., I:]) and
  ``mlp.experts.down_proj`` [E, I, H] (no ``.weight`` suffix). transformers 5 keeps [E, 2I, H] / [E, H, I]
  in memory and its conversion ``qwen3_vl_moe`` transposes on load only where the shapes say so
  (``Transpose(1, 2, check_dims=True)``); its ``save_pretrained`` writes the in-memory layout, so the builder
  transposes the fused expert tensors in the shards afterwards.

Sizes (small, keeping the real structure; every expert row a multiple of 256 so llama.cpp K-quants apply):
- Qwen3-MoE: hidden 256, 4 heads x 64, 2 KV heads, 3 layers (all MoE), 8 experts top-2 (renormalised, as
  the real ``norm_topk_prob: true``), expert width 256.
- Qwen3-VL-MoE text: hidden 256, 4 heads x 64, 2 KV heads, 3 layers, 8 experts top-2, expert width 512
  (NOT 128 or 256: with I == H or 2I == H transformers' shape check could not tell the Hub layout from its
  own and would load the experts untransposed), interleaved M-RoPE sections [12, 10, 10] (the real
  [24, 20, 20] for head_dim 128, halved). Vision: depth 2, hidden 64, 2 heads, intermediate 256, patch 16,
  temporal patch 2, spatial merge 2, 64 learned positions, DeepStack from ViT blocks 0 and 1 into decoder
  layers 0 and 1 (the real model: blocks 8, 16, 24 into layers 0..2). Images of 64..128 px.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    PreTrainedModel,
    Qwen2VLImageProcessor,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

from quantkit.reference.qwen3_tokenizer import build_qwen3_tokenizer, qwen3_chat_template
from quantkit.reference.tokenizer import padded_vocab_size

QWEN3_MOE_SIZES = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                   "num_hidden_layers": 3, "intermediate_size": 512, "num_experts": 8, "num_experts_per_tok": 2,
                   "moe_intermediate_size": 256}
QWEN3_VL_MOE_SIZES = {**QWEN3_MOE_SIZES, "moe_intermediate_size": 512, "mrope_section": [12, 10, 10],
                      "vision_depth": 2, "vision_hidden_size": 64, "vision_num_heads": 2,
                      "vision_intermediate_size": 256, "vision_num_position_embeddings": 64,
                      "deepstack_visual_indexes": [0, 1]}
IMAGE_MIN_PIXELS = 64 * 64
IMAGE_MAX_PIXELS = 128 * 128
# The real processors' normalisation (Qwen3-VL preprocessor_config.json: mean = std = 0.5).
IMAGE_MEAN = IMAGE_STD = [0.5, 0.5, 0.5]
ROPE_THETA = {"text": 1000000.0, "vl": 5000000.0}


def build_tiny_qwen3_moe(out_dir: str | Path, *, seed: int = 0, max_shard_size: str = "1MB") -> Path:
    """Build and save a tiny ``Qwen3MoeForCausalLM`` (Qwen3-30B-A3B architecture) with its tokenizer."""
    out_dir = Path(out_dir)
    tokenizer = build_qwen3_tokenizer(out_dir, qwen3_chat_template(hybrid_thinking=True))
    model = _seeded(Qwen3MoeForCausalLM, qwen3_moe_config(tokenizer), tokenizer, seed)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    return out_dir


def build_tiny_qwen3_vl_moe(out_dir: str | Path, *, seed: int = 0, max_shard_size: str = "2MB") -> Path:
    """Build and save a tiny ``Qwen3VLMoeForConditionalGeneration`` with tokenizer and processor, its
    experts fused in the Hub's transposed layout (module docstring)."""
    out_dir = Path(out_dir)
    tokenizer = build_qwen3_tokenizer(out_dir, qwen3_chat_template(hybrid_thinking=False))
    model = _seeded(Qwen3VLMoeForConditionalGeneration, qwen3_vl_moe_config(tokenizer), tokenizer, seed)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    _tiny_processor(tokenizer).save_pretrained(out_dir)
    to_hub_expert_layout(out_dir)
    return out_dir


def qwen3_moe_config(tokenizer, sizes: dict = QWEN3_MOE_SIZES) -> Qwen3MoeConfig:
    s = sizes
    return Qwen3MoeConfig(
        vocab_size=padded_vocab_size(tokenizer), hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"], num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"], num_key_value_heads=s["num_key_value_heads"],
        head_dim=s["head_dim"], max_position_embeddings=40960,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA["text"]},
        num_experts=s["num_experts"], num_experts_per_tok=s["num_experts_per_tok"],
        moe_intermediate_size=s["moe_intermediate_size"], norm_topk_prob=True, decoder_sparse_step=1,
        mlp_only_layers=[], tie_word_embeddings=False, rms_norm_eps=1e-6,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def qwen3_vl_moe_config(tokenizer, sizes: dict = QWEN3_VL_MOE_SIZES) -> Qwen3VLMoeConfig:
    s = sizes
    ids = tokenizer.convert_tokens_to_ids
    text = {k: s[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                              "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
                              "moe_intermediate_size")}
    text.update(vocab_size=padded_vocab_size(tokenizer), decoder_sparse_step=1, mlp_only_layers=[], rms_norm_eps=1e-6,
                bos_token_id=ids("<|endoftext|>"), eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    text.update(max_position_embeddings=262144, rope_parameters={
        "rope_type": "default", "rope_theta": ROPE_THETA["vl"], "mrope_section": s["mrope_section"],
        "mrope_interleaved": True})
    vision = {"depth": s["vision_depth"], "hidden_size": s["vision_hidden_size"], "num_heads": s["vision_num_heads"],
              "intermediate_size": s["vision_intermediate_size"], "patch_size": 16, "temporal_patch_size": 2,
              "spatial_merge_size": 2, "in_channels": 3, "out_hidden_size": s["hidden_size"],
              "num_position_embeddings": s["vision_num_position_embeddings"],
              "deepstack_visual_indexes": s["deepstack_visual_indexes"], "hidden_act": "gelu_pytorch_tanh"}
    return Qwen3VLMoeConfig(text_config=text, vision_config=vision, tie_word_embeddings=False,
                            image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def to_hub_expert_layout(model_dir: str | Path) -> None:
    """Rewrite the fused expert tensors of a saved Qwen3-VL-MoE from transformers' in-memory layout
    ([E, 2I, H] / [E, H, I]) to the Hub's ([E, H, 2I] / [E, I, H]), shard by shard."""
    for shard in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(shard, framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata()
        fused = [k for k in tensors if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj"))]
        if fused:
            for k in fused:
                tensors[k] = tensors[k].transpose(1, 2).contiguous()
            save_file(tensors, str(shard), metadata=meta)


def _tiny_processor(tokenizer) -> Qwen3VLProcessor:
    size = {"shortest_edge": IMAGE_MIN_PIXELS, "longest_edge": IMAGE_MAX_PIXELS}
    image = Qwen2VLImageProcessor(size=size, patch_size=16, temporal_patch_size=2, merge_size=2,
                                  image_mean=IMAGE_MEAN, image_std=IMAGE_STD)
    video = Qwen3VLVideoProcessor(size=size, patch_size=16, temporal_patch_size=2, merge_size=2,
                                  image_mean=IMAGE_MEAN, image_std=IMAGE_STD, min_frames=2, max_frames=8,
                                  cap_pixels_per_frame=True)
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=tokenizer.chat_template)


def _seeded(model_cls: type[PreTrainedModel], config, tokenizer, seed: int) -> PreTrainedModel:
    """Instantiate with transformers' default init under ``seed``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    g = model.generation_config
    g.bos_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    g.pad_token_id = tokenizer.pad_token_id
    # a chat turn ends with <|im_end|>; <|endoftext|> ends a document (the real generation_config.json)
    g.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    return model.eval()


