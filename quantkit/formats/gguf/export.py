"""`quantkit export-gguf VARIANT`: an existing GPTQ variant as a GGUF variant, without requantizing.

Every quantized module is unpacked from its qweight/qzeros/scales/g_idx (the loader's reading of
`quantization_config`) and handed to `types.from_quantized`, which maps it to the one GGML type
that stores that grid exactly or refuses, naming the tensor and the reason: a bit width / group size
/ symmetry no type holds (e.g. 4-bit g128), act-order columns not grouped consecutively, a Q4_1 min
that is not an fp16 number, a K-quant (no GPTQ file holds Q2_K/Q3_K grids). Kept tensors are carried
as stored (routers, router bias and norms as F32). The check of every tensor's scheme runs before
anything is written; a refusal while converting the data leaves nothing behind either (atomic
output directory).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from ...adapters import adapter_for
from ...checkpoint import Checkpoint
from ...errors import ProfileError, UsageError
from ...format import format_of_variant
from ...manifest import read_manifest, sha256_file
from ...plan import Plan, TensorPlan
from ...profiles import Profile, load_profile
from ...version import QUANTKIT_VERSION
from .types import check_gptq_grid, check_rows, check_stacked_experts, from_quantized, kept_type, tensor_nbytes, type_for_scheme
from .variant import FORMAT_NAME, check_source, write_gguf_variant


def export_plan(variant: Path) -> tuple[Checkpoint, Plan, dict, object]:
    """The GGUF plan of a GPTQ variant: every tensor with its scheme and exact GGML type."""
    manifest = read_manifest(variant)
    source_format = format_of_variant(variant)
    if source_format.name == FORMAT_NAME:
        raise UsageError(f"{variant}: already a {FORMAT_NAME} variant; export-gguf converts variants of other formats")
    codes = source_format.read_codes(variant)
    ckpt = codes.ckpt
    adapter = adapter_for(ckpt.config, where=str(variant / "config.json"))
    check_source(ckpt, adapter)
    entries: list[TensorPlan] = []
    for module in codes.modules:
        weight = f"{module}.weight"
        role = adapter.role_of(weight)
        scheme = codes.scheme(module)
        recorded = (manifest.get("tensors") or {}).get(weight, {})
        method = str(recorded.get("scheme", "gptq-")).split("-")[0] or "gptq"
        scheme = replace(scheme, method=method if method in ("rtn", "gptq") else "gptq")
        where = f"tensor {weight} ({role.label})"
        t = type_for_scheme(scheme, where)
        shape = codes.weight_shape(module)
        check_rows(shape, t.name, where)
        check_gptq_grid(t, where)
        entries.append(TensorPlan(weight, role, shape, "I32", codes.stored_bytes(module), scheme,
                                  tensor_nbytes(shape, t.name), storage=t.name))
    for name in codes.kept:
        info = ckpt.info(name)
        role = adapter.role_of(name)
        storage = kept_type(role.kind, info.dtype, f"tensor {name} ({role.label})")
        entries.append(TensorPlan(name, role, info.shape, info.dtype, info.nbytes, None,
                                  tensor_nbytes(info.shape, storage), storage=storage))
    entries.sort(key=lambda e: e.name)
    check_stacked_experts(entries)
    prof = manifest.get("profile") or {}
    try:
        profile = replace(load_profile(prof.get("name", "")), format="gguf")
    except ProfileError:
        profile = Profile(name=str(prof.get("name", "exported")), family=adapter.family, format="gguf")
    src = manifest.get("source") or {}
    plan = Plan(str(src.get("id") or variant), src.get("revision"), adapter.family, profile, entries,
                [f"exported from the {source_format.name.upper()} variant {variant}"])
    return ckpt, plan, manifest, codes


def export_gguf(variant: str | Path, out: str | Path | None = None, *, overwrite: bool = False,
                log: Callable[[str], None] = lambda m: None) -> Path:
    variant = Path(variant)
    ckpt, plan, manifest, codes = export_plan(variant)
    out = Path(out) if out is not None else variant.with_name(variant.name + "-GGUF")
    quantized = {e.name: e for e in plan.entries if e.quantized}

    def produce(add, progress) -> None:
        for e in plan.entries:
            if e.name in quantized:
                qw = codes.read(e.module)
                add({e.name: from_quantized(qw, e.storage, f"tensor {e.name} ({e.role.label})")})
            else:
                add({e.name: ckpt.read(e.name)})

    codes_format = manifest.get("format", "gptq")
    src = manifest.get("source") or {}
    extra = {"exported_from": {"variant": str(variant.resolve()), "format": codes_format,
                               "manifest_sha256": sha256_file(variant / "quantkit.json"),
                               "profile": (manifest.get("profile") or {}).get("name"),
                               "quantkit_version": QUANTKIT_VERSION},
             **{k: manifest[k] for k in ("method", "calibration", "fallbacks", "solver") if k in manifest}}
    path = write_gguf_variant(ckpt, plan, produce, out, overwrite=overwrite, extra=extra,
                              source_record=src, name=str(src.get("id") or variant.name))
    log(f"exported {len(quantized)} quantized tensors without requantizing")
    return path
