"""Memory of GGUF variants: bytes by role read from the file, llama.cpp RAM at a context length, and
predicted file sizes of the shipped GGUF profiles for the real ERNIE-4.5-21B-A3B.

Bytes by role (`file_bytes`): every GGUF tensor's data size from the file's tensor table (the
`gguf` reader), attributed to the role of its source tensors (quantkit.json names each one's GGUF
tensor; a layer's stacked experts split evenly over its experts); `file_bytes` is the file's size
on disk = header (metadata, vocabulary, tensor table) + 32-aligned tensor data.

llama.cpp RAM (`llama_cpp_ram`), one sequence of `context` tokens on CPU:

    RAM = W + KV + C
    W  = tensor bytes of the file (llama.cpp mmaps the file and runs on the blocks as stored)
    KV = 2 (K and V) x L x n_kv x d_head x context x 2        (llama.cpp's default f16 KV cache)
    C  = compute buffer, an allowance for one ubatch of 512 tokens with flash attention:
         512 x [n_vocab + 4 H + (n_q + 2 n_kv) d_head + k (3 I_expert) + 3 I_shared] x 4 bytes
         (fp32 logits and activations of the largest step; llama.cpp sizes its graph buffer from the
         same tensors, so the order of magnitude holds; it is not a measurement)

For the real model (`real_21b_table`) the tensors come from the config alone
(its adapter's `tensor_shapes`, the Hub / `save_pretrained` layout of Ernie4_5_MoeForCausalLM), the
plan of each shipped GGUF profile gives the exact tensor bytes, and the header is estimated from
the vocabulary size (the real tokenizer is not on this machine): 103424 tokens x ~22 bytes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from ...adapters import adapter_for, real_config
from ...checkpoint import ConfigCheckpoint
from ...manifest import read_manifest
from .variant import gguf_file

ALIGN = 32
UBATCH = 512
KV_BYTES = 2  # f16 cache, llama.cpp's default
# Public GGUFs of ERNIE-4.5-21B-A3B (file sizes as listed on the Hub), for comparison.
PUBLIC_GGUF_GB = {"BF16": 43.66, "Q8_0": 23.21, "Q5_K_M": 15.75}
# Header bytes per vocabulary token: string length (8) + ~6 bytes of UTF-8 + score (4) + type (4).
HEADER_BYTES_PER_TOKEN = 22




def file_bytes(variant: str | Path) -> dict:
    """Bytes of a GGUF variant by role, from the file: the same keys as quantkit.profile.memory.file_bytes
    (files, file_bytes, header_bytes, tensor_bytes, params, by_role) plus `by_type`."""
    from gguf import GGUFReader

    variant = Path(variant)
    manifest = read_manifest(variant)
    path = gguf_file(variant)
    paths = [path]  # the model's .gguf, and a vision projector file beside it (mmproj) if there is one
    mmproj = (manifest.get("gguf") or {}).get("mmproj")
    if mmproj:
        paths.append(variant / mmproj["file"])
    members: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for name, rec in manifest["tensors"].items():
        members.setdefault((rec.get("gguf_file") or path.name, rec["gguf_name"]), []).append((name, rec))
    by_role: dict[str, dict] = {}
    by_type: dict[str, int] = {}
    tensor_total = 0
    for p in paths:
        for t in GGUFReader(p).tensors:
            nbytes = int(t.n_bytes)
            tensor_total += nbytes
            by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + nbytes
            # a source stored in parts (projector: `name`, `name.1`) is counted once, with all its bytes
            recs = members.get((p.name, t.name)) or members.get((p.name, t.name.rsplit(".", 1)[0]), [])
            first = (p.name, t.name) in members
            for name, rec in recs:
                row = by_role.setdefault(rec["role"], {"tensors": 0, "params": 0, "bytes": 0, "types": set()})
                row["tensors"] += int(first)
                row["params"] += math.prod(rec.get("shape") or []) if first else 0
                row["bytes"] += nbytes // max(len(recs), 1)
                row["types"].add(t.tensor_type.name)
    sizes = {p.name: os.path.getsize(p) for p in paths}
    size = sum(sizes.values())
    for row in by_role.values():
        row["bits_per_param"] = round(8 * row["bytes"] / row["params"], 4) if row["params"] else None
        row["types"] = sorted(row["types"])
    return {"files": sizes, "file_bytes": size, "header_bytes": size - tensor_total,
            "tensor_bytes": tensor_total, "params": sum(r["params"] for r in by_role.values()),
            "by_role": dict(sorted(by_role.items())), "by_type": dict(sorted(by_type.items()))}


# -- llama.cpp RAM ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    top_k: int
    expert_intermediate: int
    shared_intermediate: int
    kv_bytes_per_token: int  # K and V of every layer for one token at KV_BYTES per value (the adapter's)

    @classmethod
    def from_config(cls, config: dict) -> "LlamaShape":
        adapter = adapter_for(config)
        s = adapter.shape
        return cls(s.num_layers, s.hidden_size, s.num_attention_heads, s.num_key_value_heads, s.head_dim,
                   s.vocab_size, s.top_k, s.expert_intermediate["text"], s.expert_intermediate["text"] * s.shared_experts,
                   adapter.kv_cache_bytes_per_token(KV_BYTES))

    def compute_bytes(self) -> int:
        per_token = (self.vocab + 4 * self.hidden + (self.heads + 2 * self.kv_heads) * self.head_dim
                     + self.top_k * 3 * self.expert_intermediate + 3 * self.shared_intermediate)
        return UBATCH * per_token * 4


def llama_cpp_ram(weight_bytes: int, shape: LlamaShape, context: int) -> dict:
    kv = shape.kv_bytes_per_token * context
    compute = shape.compute_bytes()
    return {"context": context, "weights": weight_bytes, "kv_cache": kv, "compute": compute,
            "total": weight_bytes + kv + compute}


# -- the real ERNIE-4.5-21B-A3B -----------------------------------------------------------------------

REAL_MODEL = "ERNIE-4.5-21B-A3B"


def real_21b_table(contexts=(4096, 32768), config: dict | None = None) -> dict:
    """Predicted GGUF file sizes of the shipped GGUF profiles for ERNIE-4.5-21B-A3B, next to the public
    GGUFs of that model, and llama.cpp RAM at each context."""
    from ...plan import build_plan
    from ...profiles import resolve_profile
    from .writer import gguf_layout

    config = config or real_config(REAL_MODEL)
    adapter = adapter_for(config)
    ckpt = ConfigCheckpoint(config, "baidu/ERNIE-4.5-21B-A3B-PT (config only)", adapter.tensor_shapes())
    shape = LlamaShape.from_config(config)
    params = sum(math.prod(i.shape) for i in ckpt.infos())
    header = HEADER_BYTES_PER_TOKEN * adapter.shape.vocab_size
    rows = []
    for bits in ("bf16", 8, 4, 3, 2):
        if bits == "bf16":
            profile = resolve_profile(adapter, bits=8, profile=None, fmt="gguf")
            from dataclasses import replace
            profile = replace(profile, rules=profile.rules[:1], name="source (BF16, norms and routers F32)")
        else:
            profile = resolve_profile(adapter, bits=bits, profile=None, fmt="gguf")
        plan = build_plan(ckpt, adapter, profile)
        data = sum((t.nbytes + ALIGN - 1) // ALIGN * ALIGN for t in gguf_layout(plan, adapter))
        types = {}
        for e in plan.entries:
            types.setdefault(e.role.label, set()).add(e.storage)
        rows.append({"profile": profile.name, "tensor_bytes": plan.predicted_bytes, "file_bytes": header + data,
                     "types": {k: sorted(v) for k, v in sorted(types.items())},
                     "ram": {str(c): llama_cpp_ram(plan.predicted_bytes, shape, c) for c in contexts}})
    return {"model": REAL_MODEL, "params": params, "header_bytes_estimate": header, "rows": rows,
            "public_gguf_gb": PUBLIC_GGUF_GB, "kv_bytes_per_token": shape.kv_bytes_per_token,
            "compute_bytes": shape.compute_bytes(), "contexts": list(contexts)}


def format_real_21b_table(t: dict) -> list[str]:
    """Markdown rows: profile, predicted file size, RAM at each context; then the public files."""
    ctx = t["contexts"]
    out = ["| GGUF | experts | file (GB) | " + " | ".join(f"llama.cpp RAM @ {c} (GB)" for c in ctx) + " |",
           "|---|---|---|" + "---|" * len(ctx)]
    for r in t["rows"]:
        experts = "/".join(r["types"].get("routed_expert.text", ["?"]))
        out.append(f"| {r['profile']} | {experts} | {r['file_bytes'] / 1e9:.2f} | "
                   + " | ".join(f"{r['ram'][str(c)]['total'] / 1e9:.2f}" for c in ctx) + " |")
    for name, gb in t["public_gguf_gb"].items():
        out.append(f"| public {name} | {name} | {gb:.2f} | " + " | ".join("—" for _ in ctx) + " |")
    return out


if __name__ == "__main__":  # python -m quantkit.formats.gguf.memory [CONTEXT ...]: the real ERNIE-4.5-21B-A3B table
    import sys

    table = real_21b_table(tuple(int(c) for c in sys.argv[1:]) or (4096, 32768))
    print("\n".join(format_real_21b_table(table)))
    print(f"\nparams {table['params']:,}; header estimate {table['header_bytes_estimate'] / 1e6:.2f} MB; "
          f"KV cache {table['kv_bytes_per_token']:,} B/token (f16); "
          f"compute allowance {table['compute_bytes'] / 1e6:.0f} MB")
