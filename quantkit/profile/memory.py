"""Memory: exact weight bytes by role from the files, and an estimate of serving VRAM.

Bytes by role (``file_bytes``) are read from the safetensors headers, never from a plan: every tensor
of every shard is attributed to the role of its weight (``...qweight/.qzeros/.scales/.g_idx`` to the
quantized module's ``.weight``), and the shards' sizes on disk = tensor bytes + header bytes exactly.

Serving VRAM estimate (``vram_estimate``), for one model replica serving ``batch`` sequences of
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
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..adapters import adapter_for
from ..checkpoint import INDEX_NAME, SINGLE_NAME, ConfigCheckpoint, read_safetensors_header

GiB = 2**30
GB = 10**9
CHUNK_TOKENS = 8192  # tokens per scheduler step with chunked prefill (vLLM's default range: 2048-8192)
RUNTIME_OVERHEAD_BYTES = 768 * 2**20  # CUDA context (~0.5 GiB on H100) + workspaces: an allowance
KV_BYTES = 2  # bf16 / fp16 KV cache
ACT_BYTES = 2  # bf16 activations
# The real ERNIE-4.5-VL processor's largest image: 28 x 28 x 6177 pixels = 6177 x 4 patches of 14 x 14
# (transformers' Ernie4_5_VLMoeImageProcessor defaults; see quantkit.reference.tiny).
REAL_MAX_IMAGE_PATCHES = 6177 * 4

_PACKED = (".qweight", ".qzeros", ".scales", ".g_idx")
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


# -- bytes by role, from the files -----------------------------------------------------------------

def shard_files(model_dir: str | Path) -> list[Path]:
    model_dir = Path(model_dir)
    index = model_dir / INDEX_NAME
    if index.is_file():
        return [model_dir / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [model_dir / SINGLE_NAME]


def file_bytes(model_dir: str | Path) -> dict:
    """Bytes of a model directory's weights, by role, read from the safetensors headers.

    Returns ``{"files": {shard: size}, "file_bytes", "header_bytes", "tensor_bytes", "params",
    "by_role": {label: {"tensors", "params", "bytes", "bits_per_param"}}}`` where ``file_bytes`` is the
    sum of the shards' sizes on disk (= ``tensor_bytes + header_bytes``), ``tensors`` counts weights
    (a quantized module's four packed tensors count once) and ``params`` counts the weights' elements
    (for a quantized module: out x in of the weight it stands for)."""
    model_dir = Path(model_dir)
    from ..gguf.variant import is_gguf_variant
    if is_gguf_variant(model_dir):  # one .gguf: its tensor table (quantkit.gguf.memory)
        from ..gguf.memory import file_bytes as gguf_file_bytes
        return gguf_file_bytes(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    adapter = adapter_for(config, where=str(model_dir / "config.json"))
    files, by_role = {}, {}
    header_total = tensor_total = 0
    for path in shard_files(model_dir):
        size = os.path.getsize(path)
        header = read_safetensors_header(path)
        files[path.name] = size
        data = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in header.values())
        tensor_total += data
        header_total += size - data
        shapes = {n: v["shape"] for n, v in header.items()}
        for name, meta in header.items():
            nbytes = meta["data_offsets"][1] - meta["data_offsets"][0]
            weight, part = _weight_name(name)
            role = adapter.role_of(weight)
            row = by_role.setdefault(role.label, {"tensors": 0, "params": 0, "bytes": 0})
            row["bytes"] += nbytes
            if part is None:
                row["tensors"] += 1
                row["params"] += math.prod(meta["shape"])
            elif part == ".qweight":
                module = weight[: -len(".weight")]
                row["tensors"] += 1
                row["params"] += _quantized_params(shapes, module, meta["shape"])
    for row in by_role.values():
        row["bits_per_param"] = round(8 * row["bytes"] / row["params"], 4) if row["params"] else None
    return {"files": files, "file_bytes": sum(files.values()), "header_bytes": header_total,
            "tensor_bytes": tensor_total, "params": sum(r["params"] for r in by_role.values()),
            "by_role": dict(sorted(by_role.items()))}


def _weight_name(name: str) -> tuple[str, str | None]:
    for suffix in _PACKED:
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".weight", suffix
    return name, None


def _quantized_params(shapes: dict, module: str, qweight_shape) -> int:
    g_idx, scales = shapes.get(module + ".g_idx"), shapes.get(module + ".scales")
    if g_idx is not None and scales is not None:
        return int(g_idx[0]) * int(scales[1])  # in x out
    raise ValueError(f"{module}: qweight without g_idx/scales in the same shard")




def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, value_bytes: int) -> int:
    """K and V of every layer for one token: 2 x layers x kv_heads x head_dim x value bytes (one formula
    for the serving VRAM estimate here and llama.cpp's RAM in quantkit.gguf.memory)."""
    return 2 * layers * kv_heads * head_dim * value_bytes


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
            vision_hidden=int(vision.hidden_size) if vision is not None else 0,
            vision_intermediate=int(vision.intermediate_size) if vision is not None else 0,
            max_image_patches=int(max_image_patches or 0))

    @property
    def kv_bytes_per_token(self) -> int:
        return kv_cache_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, KV_BYTES)

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


# -- the real ERNIE-4.5-VL-28B-A3B ------------------------------------------------------------------

def mlp_shapes(prefix: str, intermediate: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """gate/up/down of one gated MLP (an expert, the shared experts, a dense MLP)."""
    return {prefix + "gate_proj.weight": (intermediate, hidden), prefix + "up_proj.weight": (intermediate, hidden),
            prefix + "down_proj.weight": (hidden, intermediate)}


def decoder_layer_shapes(s, n: int, dense_intermediate: int) -> dict[str, tuple[int, ...]]:
    """What every ERNIE-4.5 decoder layer n holds besides its routed experts and routers: norms,
    attention, and the dense MLP (a dense layer) or the shared experts (a MoE layer). `s`: the
    adapter's ModelShape."""
    h, d = s.hidden_size, s.head_dim
    q, kv = s.num_attention_heads * d, s.num_key_value_heads * d
    p = f"model.layers.{n}."
    out = {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
           p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
           p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q)}
    if n not in s.moe_layers:
        out.update(mlp_shapes(p + "mlp.", dense_intermediate, h))
    elif s.shared_experts:
        out.update(mlp_shapes(p + "mlp.shared_experts.", s.expert_intermediate["text"] * s.shared_experts, h))
    return out


def ernie45_vl_tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of an ERNIE-4.5-VL checkpoint (on-disk names, the Hub/`save_pretrained` layout
    described in quantkit.reference.tiny) with its shape, computed from the config alone.

    Lets the plan (and so the exact packed bytes of every profile) be computed for a model that is
    not on this machine; ``tests/test_memory.py`` checks it against real checkpoints' headers."""
    adapter = adapter_for(config)
    s = adapter.shape
    native = adapter.native_config()
    text, vision = native.text_config, native.vision_config
    h = s.hidden_size
    e_text, e_vis = s.experts["text"], s.experts["vision"]
    i_text, i_vis = s.expert_intermediate["text"], s.expert_intermediate["vision"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (s.vocab_size, h), "model.norm.weight": (h,)}
    if not getattr(text, "tie_word_embeddings", True) and not getattr(native, "tie_word_embeddings", True):
        out["lm_head.weight"] = (s.vocab_size, h)
    for n in range(s.num_layers):
        p = f"model.layers.{n}."
        out.update(decoder_layer_shapes(s, n, int(text.intermediate_size)))
        if n not in s.moe_layers:
            continue
        for k in range(e_text + e_vis):
            out.update(mlp_shapes(f"{p}mlp.experts.{k}.", i_text if k < e_text else i_vis, h))
        out.update({p + "mlp.gate.weight": (h, e_text), p + "mlp.gate.weight_1": (h, e_vis),
                    p + "mlp.moe_statics.e_score_correction_bias": (2, e_text)})
    hv, iv = int(vision.hidden_size), int(vision.intermediate_size)
    patch_in = int(vision.in_channels) * int(vision.patch_size) ** 2
    v = "model.vision_model."
    out[v + "patch_embed.proj.weight"] = (hv, patch_in)
    for b in range(int(vision.depth)):
        bp = f"{v}blocks.{b}."
        out.update({bp + "attn.qkv.weight": (3 * hv, hv), bp + "attn.qkv.bias": (3 * hv,),
                    bp + "attn.proj.weight": (hv, hv), bp + "attn.proj.bias": (hv,),
                    bp + "mlp.fc1.weight": (iv, hv), bp + "mlp.fc1.bias": (iv,),
                    bp + "mlp.fc2.weight": (hv, iv), bp + "mlp.fc2.bias": (hv,),
                    bp + "norm1.weight": (hv,), bp + "norm1.bias": (hv,),
                    bp + "norm2.weight": (hv,), bp + "norm2.bias": (hv,)})
    out.update({v + "ln.weight": (hv,), v + "ln.bias": (hv,)})
    sp = hv * int(vision.spatial_merge_size) ** 2
    tp = sp * int(vision.temporal_merge_size)
    r = "model.resampler_model."
    for name, first_in in (("spatial_linear", sp), ("temporal_linear", tp)):
        out.update({f"{r}{name}.0.weight": (sp, first_in), f"{r}{name}.0.bias": (sp,),
                    f"{r}{name}.2.weight": (sp, sp), f"{r}{name}.2.bias": (sp,),
                    f"{r}{name}.3.weight": (sp,), f"{r}{name}.3.bias": (sp,)})
    out.update({r + "mlp.weight": (h, sp), r + "mlp.bias": (h,), r + "after_norm.weight": (h,)})
    return out


PRECISIONS = (("bf16", None), ("int8", 8), ("int4", 4), ("2-bit", 2))
# What is commonly quoted for ERNIE-4.5-VL-28B-A3B's weights (model cards, community quant pages):
QUOTED_GB = {"bf16": "~56", "int8": "~28", "int4": "~14-15", "2-bit": "~7-8"}


def real_28b_table(contexts=(4096, 32768), batch: int = 1, config: dict | None = None) -> dict:
    """Weights (exact bytes of the shipped profiles' plans on the real config) and serving VRAM
    estimates for ERNIE-4.5-VL-28B-A3B at bf16 and the w8/w4/w2 profiles, next to the naive
    params x bits / 8 figure and the commonly quoted numbers."""
    from ..api import resolve_profile
    from ..plan import build_plan
    from ..reference.tiny import REAL_ERNIE45_VL_28B_CONFIG_NATIVE

    config = config or REAL_ERNIE45_VL_28B_CONFIG_NATIVE
    ckpt = ConfigCheckpoint(config, "baidu/ERNIE-4.5-VL-28B-A3B-PT (config only)", ernie45_vl_tensor_shapes(config))
    adapter = adapter_for(config)
    shape = ServingShape.from_config(config, max_image_patches=REAL_MAX_IMAGE_PATCHES)
    params = sum(math.prod(i.shape) for i in ckpt.infos())
    by_kind: dict[str, int] = {}
    for info in ckpt.infos():
        label = adapter.role_of(info.name).kind
        by_kind[label] = by_kind.get(label, 0) + math.prod(info.shape)
    rows = []
    for label, bits in PRECISIONS:
        plan = build_plan(ckpt, adapter, resolve_profile(adapter, bits=bits or 8, profile=None))
        if bits is None:
            weights, profile = params * 2, "source (bf16)"
            quantized_params = 0
            by_role = {label: r["source_bytes"] for label, r in plan.by_role().items()}
        else:
            weights, profile = plan.predicted_bytes, plan.profile.name
            quantized_params = sum(math.prod(e.shape) for e in plan.quantized())
            by_role = {label: r["planned_bytes"] for label, r in plan.by_role().items()}
        naive = params * (16 if bits is None else bits) / 8
        rows.append({"precision": label, "profile": profile, "weights": weights, "naive_weights": int(naive),
                     "quantized_params": quantized_params, "quoted_gb": QUOTED_GB[label], "by_role": by_role,
                     "vram": {str(c): vram_estimate(weights, shape, c, batch) for c in contexts}})
    return {"model": "ERNIE-4.5-VL-28B-A3B", "params": params, "params_by_kind": by_kind,
            "kv_bytes_per_token": shape.kv_bytes_per_token, "shape": asdict(shape), "batch": batch,
            "contexts": list(contexts), "rows": rows,
            "assumptions": {"chunk_tokens": CHUNK_TOKENS, "runtime_overhead_bytes": RUNTIME_OVERHEAD_BYTES,
                            "kv_bytes": KV_BYTES, "activation_bytes": ACT_BYTES,
                            "max_image_patches": REAL_MAX_IMAGE_PATCHES}}


# -- measured (CUDA) -------------------------------------------------------------------------------

def cuda_peak(run) -> dict | None:
    """Peak memory torch allocated on the GPU while ``run(device)`` ran; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    run(device)
    torch.cuda.synchronize(device)
    return {"device": torch.cuda.get_device_name(device), "peak_allocated": torch.cuda.max_memory_allocated(device),
            "baseline_allocated": base}
