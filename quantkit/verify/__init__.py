"""`quantkit verify`: prove a variant loads where it claims, and export its vision tower to ONNX.

    verify(variant, runtimes=("all",), source=None) -> VerifyReport
    export_vision_onnx(variant, out=None) -> {image size: max abs error vs torch}

`verify` asks the variant's format (quantkit.format) to check its files and, per runtime, the rules
that runtime's loader applies (GPTQ: vLLM's and transformers' rules and the onnxruntime
cross-check; GGUF: the file and llama.cpp itself). A runtime is servable when integrity and all of
its rules pass; quantkit.verdicts defines the JSON form CI reads and the card section `package`
embeds. `all` means every runtime the variant's format knows; a runtime the format does not serve
is reported as not servable, with the reason.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from ..format import all_runtimes, format_of_variant
from ..verdicts import Check, RuntimeVerdict, VerifyReport
from .export_onnx import export_vision_onnx

# Every runtime some format checks (the CLI's choices besides `all`).
RUNTIMES = all_runtimes()


def resolve_runtimes(runtimes, known: tuple[str, ...]) -> tuple[str, ...]:
    """`all` -> `known` (the format's runtimes); names checked against every runtime quantkit knows."""
    if isinstance(runtimes, str):
        runtimes = (runtimes,)
    out: list[str] = []
    for r in runtimes:
        for name in (known if r == "all" else (r,)):
            if name not in RUNTIMES:
                raise UsageError(f"--runtime {name}: choose {', '.join(RUNTIMES)} or all")
            if name not in out:
                out.append(name)
    return tuple(out)


def verify(variant: str | Path, runtimes=("all",), source: str | Path | None = None, *,
           load: bool = True) -> VerifyReport:
    """Integrity + runtime contracts of a quantkit variant. `source` overrides manifest["source"]["id"]
    for the bit-identical check of kept tensors; `load=False` skips loading the model (static rules
    still run)."""
    fmt = format_of_variant(variant)
    return fmt.verify(Path(variant), resolve_runtimes(runtimes, fmt.runtimes), source, load=load)


__all__ = ["Check", "RUNTIMES", "RuntimeVerdict", "VerifyReport", "export_vision_onnx", "resolve_runtimes", "verify"]
