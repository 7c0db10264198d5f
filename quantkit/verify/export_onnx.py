"""`quantkit export-onnx VARIANT --component vision`: vision tower + resampler as ONNX, checked by onnxruntime.

The vision tower and resampler stay at source precision in every variant, so one ONNX file serves any
runtime that wants to encode images outside the language model (an onnxruntime image encoder next to
a vLLM/llama.cpp text decoder, for instance).

Graph: inputs `pixel_values` float32 [patches, C*p*p] and `position_ids` int64 [patches, 2] (the (h, w)
of every patch in the processor's block-major order, from transformers' `get_vision_position_ids`);
output `image_embeds` float32 [patches / merge**2, text hidden]: what `get_image_features` returns for
one image. The number of patches is a dynamic axis.

Limitation (documented): one image per call. The transformers vision attention splits the packed
sequence of a multi-image batch by `cu_seqlens.tolist()` (a data-dependent split that torch.export
cannot trace, and that a trace would freeze to the example's sizes), and the rotary positions depend
on each image's (h, w) grid, which the patch count alone does not determine. The wrapper below runs
the same modules (patch_embed, rotary embedding, blocks' norms/qkv/proj/MLP, ln, resampler) on one
image, with full attention over its patches and the position ids passed in precomputed. Images of a
batch are encoded one call each; videos (temporal merge of frame pairs) are not exported.

Exporter: torch's TorchScript-based `torch.onnx.export(dynamo=False)` (the dynamo exporter needs
`onnxscript`, which quantkit does not depend on), opset 17. The export is then validated with
onnxruntime (CPU) against torch's own `get_image_features` on several image sizes, different from
the one traced, and the max abs error per size is returned and recorded.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..adapters import adapter_for
from ..calibrate.processor import load_processor
from ..checkpoint import Checkpoint
from ..errors import CheckpointError, QuantkitError, UsageError, VariantCorrupt
from ..manifest import MANIFEST, read_manifest, sha256_file
from ..reference.inputs import synthetic_image

DEFAULT_SIZES = ((56, 56), (112, 84), (112, 112))  # PIL (width, height): 16, 48 and 64 patches on the tiny model
OPSET = 17


class VisionOneImage(torch.nn.Module):
    """transformers' Ernie4_5_VLMoe vision tower + resampler for one image, export-friendly."""

    def __init__(self, vision_tower, resampler):
        super().__init__()
        self.vision_tower = vision_tower
        self.resampler = resampler
        if getattr(resampler, "temporal_merge_size", 2) != 2:
            raise CheckpointError("vision export: the resampler's temporal slicing is written for temporal_merge_size 2")

    def forward(self, pixel_values: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        from transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe import apply_rotary_pos_emb_vision

        vt, rs = self.vision_tower, self.resampler
        h = vt.patch_embed(pixel_values)
        cos, sin = vt.rotary_pos_emb(h, position_ids)
        for blk in vt.blocks:
            attn = blk.attn
            heads, head_dim = attn.num_heads, attn.head_dim
            x = blk.norm1(h)
            q, k, v = attn.qkv(x).reshape(-1, 3, heads, head_dim).permute(1, 0, 2, 3).unbind(0)
            q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
            q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # [heads, patches, head_dim]
            # eager attention over the one image (transformers' eager_attention_forward, no mask)
            w = torch.matmul(q, k.transpose(1, 2)) * attn.scaling
            w = torch.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(w, v).transpose(0, 1).reshape(-1, heads * head_dim)
            h = h + attn.proj(o)
            h = h + blk.mlp(blk.norm2(h))
        h = vt.ln(h)
        h = h.reshape(-1, h.shape[-1] * rs.spatial_merge_size ** 2)
        h = rs.spatial_linear(h)
        # `_temporal_slicing` for one image (t = 1) puts the frame next to itself
        h = torch.cat([h, h], dim=-1)
        h = rs.temporal_linear(h)
        return rs.after_norm(rs.mlp(h))


def _vision_model(variant: Path):
    """The transformers model of `variant` without decoder layers (vision tower, resampler, embeddings,
    norm: all kept bit-identical in a variant), built the way calibration builds it."""

    ckpt = Checkpoint.open(variant)
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    if "vision" not in adapter.shape.modalities:
        raise UsageError(f"{variant}: --component vision needs a vision-language model, this is {adapter.family}")
    return adapter.runner().prefix_model(ckpt).float().eval()


def _image_inputs(processor, size: tuple[int, int], seed: int):

    batch = processor.image_processor(images=[synthetic_image(seed, size)], return_tensors="pt")
    pv, grid = batch["pixel_values"].float(), batch["image_grid_thw"]
    return pv, grid


def _position_ids(grid: torch.Tensor, merge: int) -> torch.Tensor:
    from transformers.vision_utils import get_vision_position_ids

    return get_vision_position_ids(grid, merge).to(torch.int64)


def reference_image_features(model, pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """torch's own path (transformers get_image_features: vision tower + resampler)."""
    with torch.no_grad():
        out = model.model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid)
    return torch.cat(list(out.pooler_output), dim=0)


def _register(variant: Path, out: Path, record: dict) -> None:
    """Add the exported file to the variant's quantkit.json (checksum + export record), atomically."""

    manifest = read_manifest(variant)
    rel = str(out.resolve().relative_to(variant.resolve()))
    manifest.setdefault("files", {})[rel] = {"sha256": sha256_file(out), "size": out.stat().st_size}
    manifest.setdefault("onnx", {})["vision"] = {"file": rel, **record}
    tmp = variant / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, variant / MANIFEST)


def export_vision_onnx(variant: str | Path, out: str | Path | None = None, *,
                       sizes=DEFAULT_SIZES, seed: int = 0) -> dict[str, float]:
    """Export, validate on `sizes` (PIL width x height), return {"WxH": max abs error vs torch}.

    `out=None` writes VARIANT/onnx/vision.onnx and records it in quantkit.json (file checksum and the
    measured errors), so it ships with the packaged variant; an `out` inside the variant is recorded
    the same way, one elsewhere is a standalone file."""
    import onnxruntime as ort


    variant = Path(variant)
    read_manifest(variant)  # a quantkit variant, or a one-line error
    out = Path(out) if out is not None else variant / "onnx" / "vision.onnx"
    model = _vision_model(variant)
    wrapper = VisionOneImage(model.model.vision_tower, model.model.resampler_model).eval()
    merge = int(model.model.vision_tower.spatial_merge_size)
    try:
        processor = load_processor(str(variant), vision=True)
    except Exception as e:  # noqa: BLE001 - any processor failure is one line for the user
        raise VariantCorrupt(f"{variant}: cannot load its image processor ({e.__class__.__name__}: {e})")
    inputs = [(f"{w}x{h}", *_image_inputs(processor, (w, h), seed)) for w, h in sizes]

    example_pv, example_grid = inputs[-1][1], inputs[-1][2]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example_pv, _position_ids(example_grid, merge)), str(tmp), dynamo=False,
                              input_names=["pixel_values", "position_ids"], output_names=["image_embeds"],
                              dynamic_axes={"pixel_values": {0: "patches"}, "position_ids": {0: "patches"},
                                            "image_embeds": {0: "image_tokens"}},
                              opset_version=OPSET, do_constant_folding=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(tmp), opts, providers=["CPUExecutionProvider"])
        errors, patches = {}, {}
        for label, pv, grid in inputs:
            ref = reference_image_features(model, pv, grid).numpy()
            got = sess.run(None, {"pixel_values": pv.numpy(), "position_ids": _position_ids(grid, merge).numpy()})[0]
            if got.shape != ref.shape:
                raise QuantkitError(f"vision export: onnxruntime returned {got.shape} for {label}, torch {ref.shape}")
            errors[label] = float(np.abs(got.astype(np.float64) - ref).max())
            patches[label] = int(pv.shape[0])
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        out.resolve().relative_to(variant.resolve())
        inside = True
    except ValueError:
        inside = False
    if inside:
        _register(variant, out, {"opset": OPSET, "inputs": {"pixel_values": "float32 [patches, C*p*p]",
                                                            "position_ids": "int64 [patches, 2]"},
                                 "output": "image_embeds float32 [patches / merge**2, hidden]",
                                 "one_image_per_call": True, "patches": patches, "max_abs_err_vs_torch": errors})
    return errors
