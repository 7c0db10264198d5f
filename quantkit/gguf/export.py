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

from ..adapters import adapter_for
from ..checkpoint import Checkpoint
from ..errors import QuantkitError
from ..plan import Plan, TensorPlan
from ..profiles import Profile, load_profile
from ..quant_config import module_scheme
from ..quantize.gptq_format import unpack
from ..variant import read_manifest, sha256_file
from ..version import QUANTKIT_VERSION
from .types import check_gptq_grid, check_rows, check_stacked_experts, from_quantized, kept_type, type_for_scheme
from .variant import check_source, write_gguf_variant

_PACKED = ("qweight", "qzeros", "scales", "g_idx")


def _weight_shape(ckpt: Checkpoint, module: str) -> tuple[int, int]:
    g_idx, scales = ckpt.info(f"{module}.g_idx"), ckpt.info(f"{module}.scales")
    return int(scales.shape[1]), int(g_idx.shape[0])


def export_plan(variant: Path) -> tuple[Checkpoint, Plan, dict]:
    """The GGUF plan of a GPTQ variant: every tensor with its scheme and exact GGML type."""
    manifest = read_manifest(variant)
    if manifest.get("format", "gptq") != "gptq":
        raise QuantkitError(f"{variant}: format {manifest.get('format')!r}; export-gguf converts GPTQ variants")
    ckpt = Checkpoint.open(variant)
    qcfg = ckpt.config.get("quantization_config") or {}
    if qcfg.get("quant_method") != "gptq":
        raise QuantkitError(f"{variant}/config.json: no GPTQ quantization_config; not a GPTQ variant")
    adapter = adapter_for(ckpt.config, where=str(variant / "config.json"))
    check_source(ckpt, adapter)
    names = set(ckpt.names())
    modules = sorted({n[: -len(".qweight")] for n in names if n.endswith(".qweight")})
    entries: list[TensorPlan] = []
    for module in modules:
        weight = f"{module}.weight"
        role = adapter.role_of(weight)
        scheme = module_scheme(qcfg, module)
        if scheme is None:
            raise QuantkitError(f"{variant}: {module} has a qweight but quantization_config skips it")
        recorded = (manifest.get("tensors") or {}).get(weight, {})
        method = str(recorded.get("scheme", "gptq-")).split("-")[0] or "gptq"
        scheme = replace(scheme, method=method if method in ("rtn", "gptq") else "gptq")
        where = f"tensor {weight} ({role.label})"
        t = type_for_scheme(scheme, where)
        shape = _weight_shape(ckpt, module)
        check_rows(shape, t.name, where)
        check_gptq_grid(t, where)
        nbytes = sum(ckpt.info(f"{module}.{p}").nbytes for p in _PACKED)
        entries.append(TensorPlan(weight, role, shape, "I32", nbytes, scheme, gguf_type=t.name))
        names -= {f"{module}.{p}" for p in _PACKED}
    for name in sorted(names):
        info = ckpt.info(name)
        role = adapter.role_of(name)
        entries.append(TensorPlan(name, role, info.shape, info.dtype, info.nbytes, None,
                                  gguf_type=kept_type(role.kind, info.dtype, f"tensor {name} ({role.label})")))
    entries.sort(key=lambda e: e.name)
    check_stacked_experts(entries)
    prof = manifest.get("profile") or {}
    try:
        profile = replace(load_profile(prof.get("name", "")), format="gguf")
    except QuantkitError:
        profile = Profile(name=str(prof.get("name", "exported")), family=adapter.family, format="gguf")
    src = manifest.get("source") or {}
    plan = Plan(str(src.get("id") or variant), src.get("revision"), adapter.family, profile, entries,
                [f"exported from the GPTQ variant {variant}"])
    return ckpt, plan, manifest


def export_gguf(variant: str | Path, out: str | Path | None = None, *, overwrite: bool = False,
                log: Callable[[str], None] = lambda m: None) -> Path:
    variant = Path(variant)
    ckpt, plan, manifest = export_plan(variant)
    out = Path(out) if out is not None else variant.with_name(variant.name + "-GGUF")
    qcfg = ckpt.config["quantization_config"]
    quantized = {e.name: e for e in plan.entries if e.quantized}

    def produce(add) -> None:
        for e in plan.entries:
            if e.name in quantized:
                module = e.module
                tensors = ckpt.read_many([f"{module}.{p}" for p in _PACKED])
                scheme = module_scheme(qcfg, module)
                qw = unpack({p: tensors[f"{module}.{p}"] for p in _PACKED}, scheme.bits, scheme.group_size, scheme.sym)
                add({e.name: from_quantized(qw, e.gguf_type, f"tensor {e.name} ({e.role.label})")})
            else:
                add({e.name: ckpt.read(e.name)})

    src = manifest.get("source") or {}
    extra = {"exported_from": {"variant": str(variant.resolve()), "format": "gptq",
                               "manifest_sha256": sha256_file(variant / "quantkit.json"),
                               "profile": (manifest.get("profile") or {}).get("name"),
                               "quantkit_version": QUANTKIT_VERSION},
             **{k: manifest[k] for k in ("method", "calibration", "fallbacks", "solver") if k in manifest}}
    path = write_gguf_variant(ckpt, plan, produce, out, overwrite=overwrite, extra=extra,
                              source_record=src, name=str(src.get("id") or variant.name))
    log(f"exported {len(quantized)} quantized tensors without requantizing")
    return path
