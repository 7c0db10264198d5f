"""`quantkit verify`: prove a variant loads where it claims, and export its vision tower to ONNX.

    verify(variant, runtimes=("vllm", "transformers", "onnxruntime"), source=None) -> VerifyReport
    export_vision_onnx(variant, out=None) -> {image size: max abs error vs torch}

`verify` runs the file integrity checks (integrity.py), then per runtime the contract rules
(contracts.py: vLLM's loader rules, quantkit.load for transformers) and, for onnxruntime, the
independent decoder (onnx_check.py: every quantized tensor through `MatMulNBits`). A runtime is
servable when integrity and all of its rules pass; report.py defines the JSON form CI reads and the
model-card section `package` embeds.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import QuantkitError
from .report import Check, RuntimeVerdict, VerifyReport, skipped

RUNTIMES = ("vllm", "transformers", "onnxruntime")


def _runtimes(runtimes) -> tuple[str, ...]:
    if isinstance(runtimes, str):
        runtimes = (runtimes,)
    out: list[str] = []
    for r in runtimes:
        for name in (RUNTIMES if r == "all" else (r,)):
            if name not in RUNTIMES:
                raise QuantkitError(f"--runtime {name}: choose vllm, transformers, onnxruntime or all")
            if name not in out:
                out.append(name)
    return tuple(out)


def verify(variant: str | Path, runtimes=RUNTIMES, source: str | Path | None = None, *,
           load: bool = True) -> VerifyReport:
    """Integrity + runtime contracts of a quantkit variant. `source` overrides manifest["source"]["id"]
    for the bit-identical check of kept tensors; `load=False` skips the transformers load (static
    transformers rules still run)."""
    from ..gguf.variant import is_gguf_variant
    if is_gguf_variant(variant):  # a llama.cpp file: its own checks (quantkit/gguf/verify.py)
        from ..gguf.verify import verify_gguf
        return verify_gguf(variant, runtimes, source, load=load)
    from .contracts import check_transformers, check_vllm
    from .integrity import VariantFiles, run_integrity
    from .onnx_check import cross_check

    wanted = _runtimes(runtimes)
    v = VariantFiles(variant)
    if not v.qcfg:
        raise QuantkitError(f"{Path(variant) / 'config.json'}: no quantization_config; not a GPTQ variant")
    integrity, _ = run_integrity(v, source)
    report = VerifyReport(str(variant), integrity)
    for name in wanted:
        if v.index_problems:
            checks = [skipped(f"{name}.files", f"runtime rules need every tensor; {v.index_problems[0]}")]
        elif name == "vllm":
            checks = check_vllm(v)
        elif name == "transformers":
            checks = check_transformers(v, load=load)
        else:
            checks, report.onnx = cross_check(v)
        report.runtimes[name] = RuntimeVerdict(name, checks, integrity_ok=report.integrity_ok)
    return report


def export_vision_onnx(variant: str | Path, out: str | Path | None = None, **kwargs) -> dict:
    """Vision tower + resampler of `variant` as ONNX (dynamic number of patches, one image per call),
    validated with onnxruntime against torch; see export_onnx.py."""
    from .export_onnx import export_vision_onnx as run
    return run(variant, out, **kwargs)


__all__ = ["Check", "RUNTIMES", "RuntimeVerdict", "VerifyReport", "export_vision_onnx", "verify"]
