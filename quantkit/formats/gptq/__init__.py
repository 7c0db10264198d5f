"""The GPTQ checkpoint format (`quant_method: gptq`, `checkpoint_format: gptq`): per module
qweight/qzeros/scales/g_idx in safetensors shards, `quantization_config` with `dynamic` rules.

One job per module:
- `packing.py`    QuantizedWeight <-> qweight/qzeros/scales/g_idx (incl. 3-bit straddling words)
- `config.py`     the `quantization_config` block and how GPTQ loaders read a module's scheme from it
- `backend.py`    how the quantize pipeline emits a module
- `variant.py`    the variant directory, atomically
- `reader.py`     a variant read back, dequantized, in the source's key names
- `memory.py`     bytes by role from the shards' headers
- `card.py`       what the model card says about the format and its runtimes
- `integrity.py`, `vllm_view.py`, `contracts.py`, `transformers_rules.py`, `onnx_check.py`
                  `quantkit verify` (files; vLLM >= 0.34's rules; transformers through quantkit.load;
                  onnxruntime MatMulNBits cross-check)
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ...errors import PlanRefused, VariantCorrupt
from ...format import Format
from ...plan import TensorPlan, check_fused_groups
from ...scheme import QuantScheme
from ...scheme import fit_group as fit_group_size
from ...verdicts import RuntimeVerdict, VerifyReport, failed, skipped
from .backend import GPTQBackend
from .card import gptq_card
from .contracts import check_vllm
from .integrity import VariantFiles, run_integrity
from .memory import file_bytes
from .onnx_check import cross_check
from .packing import GPTQ_BITS, check_packable, packed_nbytes
from .reader import GPTQCodes, dequantized_state_dict
from .transformers_rules import check_transformers
from .variant import write_variant

# Smallest group the fallback will pick before going per-channel: GPTQ kernels (Marlin, exllama)
# take 32, 64 and 128.
MIN_GROUP = 32


def fit_group(scheme: QuantScheme, in_features: int) -> tuple[QuantScheme, str | None]:
    return fit_group_size(scheme, in_features, MIN_GROUP)


class GPTQFormat(Format):
    name = "gptq"
    description = "GPTQ checkpoint (safetensors shards, quantization_config with dynamic rules)"
    default_format = True
    runtimes = ("vllm", "transformers", "onnxruntime")

    def plan_tensor(self, info, role, scheme, adapter) -> TensorPlan:
        if scheme is None:
            return TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, None, info.nbytes)
        if scheme.bits not in GPTQ_BITS:
            raise PlanRefused(f"tensor {info.name}: {scheme.bits}-bit: the GPTQ format stores "
                              f"{', '.join(map(str, GPTQ_BITS))} bits; use --format compressed-tensors (2 to 8 bits) "
                              "or other bits")
        self.refuse_scale_codes(scheme, info.name)
        out_f, in_f = info.shape
        scheme, fallback = fit_group(scheme, in_f)
        try:
            check_packable(out_f, in_f, scheme.bits, scheme.group_size)
        except ValueError as e:
            raise PlanRefused(f"tensor {info.name}: {e}; keep it in the profile or use other bits")
        nbytes = packed_nbytes(out_f, in_f, scheme.bits, scheme.effective_group_size(in_f))
        return TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, scheme, nbytes, fallback,
                          adapter.fused_group(info.name, role))

    def check_plan(self, entries, force, notes) -> None:
        check_fused_groups(entries, force, notes)

    def candidate_schemes(self, base: QuantScheme) -> tuple[QuantScheme, ...]:
        return tuple(replace(base, bits=b) for b in sorted(GPTQ_BITS))

    def backend(self) -> GPTQBackend:
        return GPTQBackend()

    def write_variant(self, ckpt, plan, produce, out, **kwargs) -> Path:
        return write_variant(ckpt, plan, produce, out, **kwargs)

    def dequantized_state_dict(self, variant: Path) -> dict:
        return dequantized_state_dict(variant)

    def check_variant(self, variant: Path) -> None:
        qcfg = (json.loads((Path(variant) / "config.json").read_text()).get("quantization_config") or {})
        if qcfg.get("quant_method") != "gptq":
            raise VariantCorrupt(f"{variant}: not a quantkit/GPTQ variant (no GPTQ quantization_config in config.json)")

    def file_bytes(self, variant: Path) -> dict:
        return file_bytes(variant)

    def read_codes(self, variant: Path) -> GPTQCodes:
        return GPTQCodes(variant)

    def verify(self, variant, runtimes, source, *, load: bool) -> VerifyReport:
        v = VariantFiles(variant)
        if not v.qcfg:
            raise VariantCorrupt(f"{Path(variant) / 'config.json'}: no quantization_config; not a GPTQ variant")
        integrity, _ = run_integrity(v, source)
        report = VerifyReport(str(variant), integrity)
        for name in runtimes:
            serve = ""
            if v.index_problems:
                checks = [skipped(f"{name}.files", f"runtime rules need every tensor; {v.index_problems[0]}")]
            elif name == "vllm":
                checks, serve = check_vllm(v)
            elif name == "transformers":
                checks = check_transformers(v, load=load)
            elif name == "onnxruntime":
                checks, report.onnx = cross_check(v)
            else:
                checks = [failed(f"{name}.format", [f"{name} does not read the GPTQ format"],
                                 f"a GPTQ variant; {name} needs another format (see `quantkit quantize --format`)")]
            report.runtimes[name] = RuntimeVerdict(name, checks, integrity_ok=report.integrity_ok, serve=serve)
        return report

    def card(self, manifest, info):
        return gptq_card(manifest, info)


FORMAT = GPTQFormat()
