"""A synthetic ERNIE-4.5-VL-28B-A3B checkpoint with the real shapes, and calibration hidden states.

The checkpoint is written tensor by tensor with quantkit's `ShardWriter` (2 GiB shards, bf16, the Hub's
on-disk names that the ERNIE-VL adapter maps), without instantiating the transformers model:

- config: `real_config("ERNIE-4.5-VL-28B-A3B")` (native flavour) with `num_hidden_layers = 1 + N`, layer 0 dense (as in the
  real model) and layers 1..N MoE: hidden 2560, 20 heads / 4 KV heads of 128, 64 text experts x 1536 and
  64 vision experts x 512 (top-6), 2 shared experts (one MLP of 2 x 1536), dense MLP 12288, routers
  `mlp.gate.weight` / `mlp.gate.weight_1` stored [hidden, 64], `moe_statics.e_score_correction_bias`
  [2, 64] fp32; the real vocabulary (103424 x 2560 embeddings, tied head) unless `vocab_size` is given.
- not written: the vision tower and resampler (`model.vision_model.*`, `model.resampler_model.*`). The
  benchmark bypasses the prefix model and feeds synthetic hidden states to the decoder layers.
- weights are heavy-tailed, not Gaussian: w = std * z * exp(0.7 u) / exp(0.49) with z, u ~ N(0, 1) (a
  Gaussian scale mixture: excess kurtosis ~5, so group ranges are set by outliers), std 0.02, and in every
  linear 8 random input columns scaled x4 (outlier input channels).

Calibration hidden states (`synthetic_states`): samples of `seq_len` tokens, each with one contiguous image
span (a `rows x 16` grid of vision tokens, `vision_frac` of the sample) between text; per sample the layer
kwargs the real prefix model passes (M-RoPE `position_embeddings` from the model's own rotary class,
3-axis `position_ids` laid out as the processor does for an image, `moe_mm_token_type_ids`, no mask: sdpa
is causal). Values: a rank-64 token structure plus noise, per-channel scales log-normal, text and vision
tokens from different bases (vision tokens offset), about unit RMS, and 8 fixed "massive activation"
channels x20, so the Hessians are ill-conditioned as in real models.

The same arguments give byte-identical tensors (per-tensor seeds). Sizes: `SMOKE` shrinks every width
for tests (same structure, same code path).
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
import zlib
from pathlib import Path

import torch

from quantkit.adapters import real_config
from quantkit.checkpoint import ShardWriter

GENERATOR_VERSION = 1
WEIGHT_STD = 0.02
TAIL_SIGMA = 0.7
WEIGHT_OUTLIER_COLUMNS = 8
WEIGHT_OUTLIER_BOOST = 4.0
ACT_OUTLIER_CHANNELS = 8
ACT_OUTLIER_SCALE = 20.0
ROUTER_BIAS_STD = 0.002
IMAGE_GRID_WIDTH = 16

# Real shapes, the published checkpoint's (text and vision widths as its real config).
REAL = "real"
# Every width shrunk for the smoke test; same structure (dense layer 0, MoE layers, 2 modalities).
SMOKE = "smoke"
_SMOKE_TEXT = {"vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 2,
               "num_key_value_heads": 1, "moe_intermediate_size": [128, 64], "moe_num_experts": 8, "moe_k": 2,
               "moe_num_shared_experts": 1}


def bench_config(moe_layers: int, size: str = REAL, vocab_size: int | None = None) -> dict:
    """The native config.json of a checkpoint with a dense layer 0 and `moe_layers` MoE layers."""
    cfg = real_config("ERNIE-4.5-VL-28B-A3B")  # a fresh copy
    text = cfg["text_config"]
    if size == SMOKE:
        text.update(copy.deepcopy(_SMOKE_TEXT))
    elif size != REAL:
        raise ValueError(f"size must be {REAL!r} or {SMOKE!r}, got {size!r}")
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    text["num_hidden_layers"] = 1 + moe_layers
    text["mlp_layer_types"] = ["dense"] + ["sparse"] * moe_layers
    return cfg


def _seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def activation_outliers(hidden: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(_seed(seed, "activation-outliers"))
    return sorted(torch.randperm(hidden, generator=g)[:ACT_OUTLIER_CHANNELS].tolist())


def heavy_tailed(shape: tuple[int, int], gen: torch.Generator, std: float = WEIGHT_STD,
                 outlier_columns: int = WEIGHT_OUTLIER_COLUMNS) -> torch.Tensor:
    """bf16 [out, in]: a Gaussian scale mixture with unit-variance normalisation, times `std`, with
    `outlier_columns` input columns scaled by WEIGHT_OUTLIER_BOOST. Generated in row chunks."""
    out_f, in_f = shape
    w = torch.empty(shape, dtype=torch.bfloat16)
    norm = std * math.exp(-TAIL_SIGMA**2)  # E[exp(2 s u)] = exp(2 s^2): divide the std by exp(s^2)
    cols = torch.randperm(in_f, generator=gen)[:outlier_columns]
    boost = torch.ones(in_f)
    boost[cols] = WEIGHT_OUTLIER_BOOST
    step = max(1, (1 << 22) // in_f)
    for r in range(0, out_f, step):
        n = min(step, out_f - r)
        z = torch.randn(n, in_f, generator=gen)
        u = torch.randn(n, in_f, generator=gen)
        z.mul_(u.mul_(TAIL_SIGMA).exp_()).mul_(norm).mul_(boost)
        w[r:r + n] = z.to(torch.bfloat16)
    return w


def layer_specs(cfg: dict, layer: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(on-disk name, shape, kind) of one decoder layer's tensors."""
    t = cfg["text_config"]
    h, heads, kv = t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"]
    hd = t.get("head_dim") or h // heads
    p = f"model.layers.{layer}."
    specs = [(p + "self_attn.q_proj.weight", (heads * hd, h), "linear"),
             (p + "self_attn.k_proj.weight", (kv * hd, h), "linear"),
             (p + "self_attn.v_proj.weight", (kv * hd, h), "linear"),
             (p + "self_attn.o_proj.weight", (h, heads * hd), "linear"),
             (p + "input_layernorm.weight", (h,), "norm"),
             (p + "post_attention_layernorm.weight", (h,), "norm")]
    if t["mlp_layer_types"][layer] == "dense":
        i = t["intermediate_size"]
        specs += [(p + "mlp.gate_proj.weight", (i, h), "linear"), (p + "mlp.up_proj.weight", (i, h), "linear"),
                  (p + "mlp.down_proj.weight", (h, i), "linear")]
        return specs
    e = t["moe_num_experts"]
    i_text, i_vis = t["moe_intermediate_size"]
    for k in range(2 * e):
        i = i_text if k < e else i_vis
        specs += [(p + f"mlp.experts.{k}.gate_proj.weight", (i, h), "linear"),
                  (p + f"mlp.experts.{k}.up_proj.weight", (i, h), "linear"),
                  (p + f"mlp.experts.{k}.down_proj.weight", (h, i), "linear")]
    shared = i_text * t["moe_num_shared_experts"]
    specs += [(p + "mlp.shared_experts.gate_proj.weight", (shared, h), "linear"),
              (p + "mlp.shared_experts.up_proj.weight", (shared, h), "linear"),
              (p + "mlp.shared_experts.down_proj.weight", (h, shared), "linear"),
              (p + "mlp.gate.weight", (h, e), "router"),
              (p + "mlp.gate.weight_1", (h, e), "router"),
              (p + "mlp.moe_statics.e_score_correction_bias", (2, e), "router_bias")]
    return specs


def make_tensor(name: str, shape: tuple[int, ...], kind: str, seed: int, outliers: list[int]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(_seed(seed, name))
    if kind == "linear":
        return heavy_tailed(shape, gen)
    if kind == "norm":
        return (1.0 + 0.05 * torch.randn(shape, generator=gen)).to(torch.bfloat16)
    if kind == "router":  # [hidden, E]: logits of O(1); the massive-activation rows damped
        w = torch.randn(shape, generator=gen) / math.sqrt(shape[0])
        w[outliers] /= ACT_OUTLIER_SCALE
        return w.to(torch.bfloat16)
    if kind == "router_bias":
        return (ROUTER_BIAS_STD * torch.randn(shape, generator=gen)).float()
    if kind == "embedding":
        return heavy_tailed(shape, gen, outlier_columns=0)
    raise ValueError(kind)


def checkpoint_bytes(cfg: dict) -> int:
    t = cfg["text_config"]
    total = t["vocab_size"] * t["hidden_size"] * 2 + t["hidden_size"] * 2
    for n in range(t["num_hidden_layers"]):
        for _, shape, kind in layer_specs(cfg, n):
            total += math.prod(shape) * (4 if kind == "router_bias" else 2)
    return total


def generate_checkpoint(out: Path, cfg: dict, seed: int = 0, log=print) -> Path:
    """Write the checkpoint into `out` (atomically: a sibling temp dir renamed at the end)."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.perf_counter()
    t = cfg["text_config"]
    outliers = activation_outliers(t["hidden_size"], seed)
    try:
        writer = ShardWriter(tmp)
        for n in range(t["num_hidden_layers"]):
            t0 = time.perf_counter()
            for name, shape, kind in layer_specs(cfg, n):
                writer.add(name, make_tensor(name, shape, kind, seed, outliers))
            log(f"realshape: layer {n} ({t['mlp_layer_types'][n]}) generated in {time.perf_counter() - t0:.1f}s")
        writer.add("model.embed_tokens.weight",
                   make_tensor("model.embed_tokens.weight", (t["vocab_size"], t["hidden_size"]), "embedding", seed, outliers))
        writer.add("model.norm.weight", make_tensor("model.norm.weight", (t["hidden_size"],), "norm", seed, outliers))
        shards = writer.close()
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "tensor_bytes": writer.total_bytes,
                "shards": shards, "seconds": round(time.perf_counter() - started, 1),
                "activation_outlier_channels": outliers}
        (tmp / "bench_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def cache_dir(root: Path, moe_layers: int, size: str, vocab_size: int | None, seed: int) -> Path:
    vocab = "realvocab" if vocab_size is None else f"vocab{vocab_size}"
    return Path(root) / f"ernie45vl-{size}-dense1-moe{moe_layers}-{vocab}-s{seed}-g{GENERATOR_VERSION}"


def ensure_checkpoint(root: Path, moe_layers: int, size: str = REAL, vocab_size: int | None = None,
                      seed: int = 0, log=print) -> tuple[Path, bool]:
    """(path, reused): a complete cached checkpoint with at least `moe_layers` MoE layers (same size,
    vocabulary, seed and generator; the benchmark runs layers 0..moe_layers of it), else a new one."""
    for n in range(moe_layers, moe_layers + 64):
        path = cache_dir(root, n, size, vocab_size, seed)
        meta = path / "bench_meta.json"
        if meta.is_file() and (path / "config.json").is_file():
            m = json.loads(meta.read_text())
            if m.get("generator_version") == GENERATOR_VERSION and \
                    json.loads((path / "config.json").read_text()) == bench_config(n, size, vocab_size):
                return path, True
    path = cache_dir(root, moe_layers, size, vocab_size, seed)
    cfg = bench_config(moe_layers, size, vocab_size)
    log(f"realshape: generating {checkpoint_bytes(cfg) / 2**30:.2f} GiB checkpoint in {path}")
    return generate_checkpoint(path, cfg, seed, log=log), False


# -- calibration hidden states -----------------------------------------------------------------------

def synthetic_states(text_config, n_tokens: int, seq_len: int, vision_frac: float, seed: int = 0):
    """[(hidden [1, L, H] fp32, layer kwargs)] for `n_tokens` tokens in samples of `seq_len`."""
    from transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe import Ernie4_5_VLMoeTextRotaryEmbedding

    h = text_config.hidden_size
    rotary = Ernie4_5_VLMoeTextRotaryEmbedding(text_config)
    gen = torch.Generator().manual_seed(_seed(seed, "states"))
    rank = min(64, h)
    chan = torch.exp(0.5 * torch.randn(h, generator=gen))
    base_text = torch.randn(rank, h, generator=gen) * chan / math.sqrt(rank)
    base_vis = torch.randn(rank, h, generator=gen) * chan / math.sqrt(rank)
    offset_vis = 0.5 * torch.randn(h, generator=gen) * chan
    outliers = activation_outliers(h, seed)
    states, left = [], n_tokens
    while left > 0:
        n = min(seq_len, left)
        left -= n
        n_vis = int(round(n * vision_frac / IMAGE_GRID_WIDTH)) * IMAGE_GRID_WIDTH
        n_vis = max(0, min(n_vis, n - 2))
        start = int(torch.randint(1, max(2, n - n_vis), (1,), generator=gen)) if n_vis else n
        types = torch.zeros(n, dtype=torch.long)
        types[start:start + n_vis] = 1
        x = torch.randn(n, rank, generator=gen) @ base_text + 0.3 * torch.randn(n, h, generator=gen) * chan
        if n_vis:
            xv = torch.randn(n_vis, rank, generator=gen) @ base_vis + offset_vis
            x[start:start + n_vis] = xv + 0.3 * torch.randn(n_vis, h, generator=gen) * chan
        x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
        x[:, outliers] *= ACT_OUTLIER_SCALE
        states.append((x.unsqueeze(0), _layer_kwargs(rotary, x, types, start, n_vis)))
    return states


def _layer_kwargs(rotary, x: torch.Tensor, types: torch.Tensor, start: int, n_vis: int) -> dict:
    """M-RoPE positions as the processor lays out one image: text positions run on; an image of
    rows x W tokens keeps t fixed and walks h / w over the grid; text after it resumes past the grid."""
    n = x.shape[0]
    pos = torch.zeros(3, n, dtype=torch.long)
    pos[:, :start] = torch.arange(start)
    after = start
    if n_vis:
        rows = n_vis // IMAGE_GRID_WIDTH
        idx = torch.arange(n_vis)
        pos[0, start:start + n_vis] = start
        pos[1, start:start + n_vis] = start + idx // IMAGE_GRID_WIDTH
        pos[2, start:start + n_vis] = start + idx % IMAGE_GRID_WIDTH
        after = start + max(rows, IMAGE_GRID_WIDTH)
    rest = n - start - n_vis
    pos[:, start + n_vis:] = after + torch.arange(rest)
    position_ids = pos.unsqueeze(1)  # [3, 1, L]
    with torch.no_grad():
        position_embeddings = rotary(x.unsqueeze(0), position_ids)
    return {"position_embeddings": position_embeddings, "attention_mask": None, "position_ids": position_ids,
            "moe_mm_token_type_ids": types.unsqueeze(0), "output_router_logits": None}
