"""The serving VRAM estimate (weights + KV cache + activations + runtime allowance), from a config.

Moved out of quantkit.profile so the allocator (quantkit.allocate, below the api) can budget `--vram`;
quantkit.profile.memory re-exports it. For one model replica serving ``batch`` sequences of
``context`` tokens (prompt + output) with a paged KV cache (vLLM-style):

    VRAM = W + KV + A + R
    W  = weight bytes as stored: GPTQ kernels (Marlin, exllama, moe_wna16) run on the packed
         qweight/scales/qzeros as they are in the files; kept tensors at their stored dtype
    KV = 2 (K and V) x L x n_kv x d_head x context x batch x b_kv        (b_kv = 2: bf16 cache)
    A  = activation allowance: the largest transient tensors of one forward step
       = T x [2H + (n_q + 2 n_kv) d_head + n_q d_head + max(3 I_dense, k (3 I_expert + H) + 3 I_shared)] x b_act
         + batch x V x 4                     (fp32 logits of the positions being sampled)
         + P x (4 H_v + I_v) x b_act         (the ViT on one image of P patches at the processor's
                                              largest size; attention itself is fused, O(P) memory)
       with T = min(context x batch, CHUNK_TOKENS) tokens per step (chunked prefill), b_act = 2
    R  = RUNTIME_OVERHEAD_BYTES: CUDA context, cuBLAS / attention workspaces, allocator slack. An
         allowance (not derived from the model) and outside torch's own allocation counters.

The MoE term counts, per token, the fused-MoE kernel's intermediate buffers (k copies of the
token's gate/up output 2 I, the activated I and the k down-projected outputs H) next to the shared
experts; on the real model it is ~3x the dense layer's. What the estimate leaves out, and why serving
engines ask for more: vLLM by default reserves ``gpu_memory_utilization`` = 90 % of the card and fills
whatever the weights and its profiling run leave with KV blocks; CUDA graphs for decode add a few
hundred MB; tensor-parallel runs add communication buffers.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .adapters import adapter_for

GiB = 2**30
GB = 10**9
CHUNK_TOKENS = 8192  # tokens per scheduler step with chunked prefill (vLLM's default range: 2048-8192)
RUNTIME_OVERHEAD_BYTES = 768 * 2**20  # CUDA context (~0.5 GiB on H100) + workspaces: an allowance
KV_BYTES = 2  # bf16 / fp16 KV cache
ACT_BYTES = 2  # bf16 activations
# The real ERNIE-4.5-VL processor's largest image: 28 x 28 x 6177 pixels = 6177 x 4 patches of 14 x 14
# (transformers' Ernie4_5_VLMoeImageProcessor defaults; see quantkit.reference.tiny).
REAL_MAX_IMAGE_PATCHES = 6177 * 4


# -- the model's serving shape ---------------------------------------------------------------------

@dataclass(frozen=True)
class ServingShape:
    """What the VRAM estimate reads from a config (any ERNIE-4.5 flavour, through its adapter)."""

    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab: int
    dense_intermediate: int
    expert_intermediate: int  # the widest routed expert (text)
    top_k: int
    shared_intermediate: int  # all shared experts together
    kv_bytes_per_token: int  # K and V of every layer for one token at KV_BYTES per value (the adapter's)
    vision_hidden: int = 0
    vision_intermediate: int = 0
    max_image_patches: int = 0

    @classmethod
    def from_config(cls, config: dict, max_image_patches: int | None = None) -> "ServingShape":
        adapter = adapter_for(config)
        s = adapter.shape
        native = adapter.native_config()
        text = getattr(native, "text_config", native)
        vision = getattr(native, "vision_config", None)
        widest = max(s.expert_intermediate.values())
        return cls(
            num_layers=s.num_layers, hidden=s.hidden_size, num_heads=s.num_attention_heads,
            num_kv_heads=s.num_key_value_heads, head_dim=s.head_dim, vocab=s.vocab_size,
            dense_intermediate=int(text.intermediate_size), expert_intermediate=widest, top_k=s.top_k,
            shared_intermediate=s.expert_intermediate["text"] * s.shared_experts,
            kv_bytes_per_token=adapter.kv_cache_bytes_per_token(KV_BYTES),
            vision_hidden=int(vision.hidden_size) if vision is not None else 0,
            vision_intermediate=int(vision.intermediate_size) if vision is not None else 0,
            max_image_patches=int(max_image_patches or 0))

    def activation_values_per_token(self) -> int:
        h, d = self.hidden, self.head_dim
        attention = 2 * h + (self.num_heads + 2 * self.num_kv_heads) * d + self.num_heads * d
        dense = 3 * self.dense_intermediate
        moe = self.top_k * (3 * self.expert_intermediate + h) + 3 * self.shared_intermediate
        return attention + max(dense, moe)


def max_image_patches(model_dir: str | Path) -> int:
    """Patches of the largest image the model's processor produces (processor_config.json)."""
    path = Path(model_dir) / "processor_config.json"
    if not path.is_file():
        return 0
    cfg = json.loads(path.read_text())
    image = cfg.get("image_processor", cfg)
    size = image.get("size") or {}
    pixels = size.get("longest_edge") or image.get("max_pixels") or 0
    patch = image.get("patch_size", 14)
    return int(pixels) // (patch * patch)


def vram_estimate(weight_bytes: int, shape: ServingShape, context: int, batch: int = 1) -> dict:
    """The documented estimate (module docstring): components and total, in bytes."""
    kv = shape.kv_bytes_per_token * context * batch
    tokens = min(context * batch, CHUNK_TOKENS)
    act_text = tokens * shape.activation_values_per_token() * ACT_BYTES
    logits = batch * shape.vocab * 4
    act_vision = shape.max_image_patches * (4 * shape.vision_hidden + shape.vision_intermediate) * ACT_BYTES
    activations = act_text + logits + act_vision
    total = weight_bytes + kv + activations + RUNTIME_OVERHEAD_BYTES
    return {"context": context, "batch": batch, "weights": weight_bytes, "kv_cache": kv,
            "activations": activations, "runtime_overhead": RUNTIME_OVERHEAD_BYTES, "total": total}


