"""The compressed-tensors format (`quant_method: compressed-tensors`, `format: pack-quantized`): per
module weight_packed/weight_scale/weight_shape(/weight_zero_point) in safetensors shards under the
source's key names (experts per expert, as on the Hub), `quantization_config` with one config group
per distinct scheme and an `ignore` list that also names vLLM's routers. What vLLM >= 0.34 serves at
2 to 8 bits (WNA16 MoE) and what transformers loads with a plain `from_pretrained`.

One job per module:
- `packing.py`            QuantizedWeight <-> pack-quantized tensors, through compressed-tensors' own packing
- `config.py`             the `quantization_config` (config_groups, ignore) and how readers resolve a module
- `backend.py`            how the quantize pipeline emits a module
- `variant.py`            the variant directory, atomically
- `reader.py`             a variant read back (codes, dequantized state) and its bytes by role
- `integrity.py`          `quantkit verify`'s file checks, compressed-tensors' own decompressor among them
- `contracts.py`          vLLM's rules;  `transformers_rules.py`  plain from_pretrained
- `card.py`               what the model card says about the format and its runtimes
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ...adapters import adapter_for
from ...errors import PlanRefused, ProfileError, UsageError, VariantCorrupt
from ...format import Format, format_of_variant
from ...manifest import read_manifest, sha256_file
from ...plan import Plan, TensorPlan, check_fused_groups
from ...profiles import Profile, load_profile
from ...scheme import fit_group, parse_scheme_label
from ...verdicts import RuntimeVerdict, VerifyReport, failed
from ...version import QUANTKIT_VERSION
from .backend import CompressedTensorsBackend, packed
from .card import ct_card
from .config import QUANT_METHOD
from .contracts import check_vllm
from .integrity import CTVariant, run_integrity
from .packing import check_bits, packed_nbytes
from .reader import CTCodes, dequantized_state_dict, file_bytes
from .transformers_rules import check_transformers
from .variant import write_variant

NAME = "compressed-tensors"
# Smallest group the fallback picks before going per-channel (vLLM's Marlin WNA16 takes 32/64/128).
MIN_GROUP = 32


class CompressedTensorsFormat(Format):
    name = NAME
    description = "pack-quantized safetensors shards (vLLM >= 0.34 at 2-8 bits; transformers from_pretrained)"
    runtimes = ("vllm", "transformers")

    def plan_tensor(self, info, role, scheme, adapter) -> TensorPlan:
        if scheme is None:
            return TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, None, info.nbytes)
        try:
            check_bits(scheme.bits)
        except ValueError as e:
            raise PlanRefused(f"tensor {info.name}: {e}")
        if scheme.desc_act:
            raise PlanRefused(f"tensor {info.name}: act-order (desc_act) needs `actorder: group` with weight_g_idx, "
                              "which compressed-tensors 0.20 removed; drop desc_act or use --format gptq")
        self.refuse_scale_codes(scheme, info.name)
        out_f, in_f = info.shape
        scheme, fallback = fit_group(scheme, in_f, MIN_GROUP)
        nbytes = packed_nbytes(out_f, in_f, scheme.bits, scheme.effective_group_size(in_f), scheme.sym)
        return TensorPlan(info.name, role, info.shape, info.dtype, info.nbytes, scheme, nbytes, fallback,
                          adapter.fused_group(info.name, role))

    def check_plan(self, entries, force, notes) -> None:
        check_fused_groups(entries, force, notes)

    def candidate_schemes(self, base):
        return tuple(replace(base, bits=b) for b in range(2, 9))

    def backend(self) -> CompressedTensorsBackend:
        return CompressedTensorsBackend()

    def write_variant(self, ckpt, plan, produce, out, **kwargs) -> Path:
        return write_variant(ckpt, plan, produce, out, **kwargs)

    def dequantized_state_dict(self, variant: Path) -> dict:
        return dequantized_state_dict(variant)

    def read_codes(self, variant: Path) -> CTCodes:
        return CTCodes(variant)

    def check_variant(self, variant: Path) -> None:
        qcfg = json.loads((Path(variant) / "config.json").read_text()).get("quantization_config") or {}
        if qcfg.get("quant_method") != QUANT_METHOD:
            raise VariantCorrupt(f"{variant}: not a compressed-tensors variant (config.json has no compressed-tensors "
                                 "quantization_config)")

    def file_bytes(self, variant: Path) -> dict:
        return file_bytes(variant)

    def verify(self, variant, runtimes, source, *, load: bool) -> VerifyReport:
        v = CTVariant(variant)
        report = VerifyReport(str(variant), run_integrity(v, source))
        for name in runtimes:
            serve = ""
            if name == "vllm":
                checks, serve = check_vllm(v)
            elif name == "transformers":
                checks = check_transformers(v, load=load)
            else:
                checks = [failed(f"{name}.format", [f"{name} does not read the compressed-tensors format"],
                                 f"a compressed-tensors variant; {name} needs another format "
                                 "(see `quantkit quantize --format`)")]
            report.runtimes[name] = RuntimeVerdict(name, checks, integrity_ok=report.integrity_ok, serve=serve)
        return report

    def convert(self, variant, out, *, overwrite: bool, log) -> Path:
        return convert_variant(self, Path(variant), out, overwrite=overwrite, log=log)

    def card(self, manifest, info):
        return ct_card(manifest, info)


def convert_variant(fmt: Format, variant: Path, out: Path | None, *, overwrite: bool, log) -> Path:
    """A variant of another format (e.g. GPTQ) rewritten as compressed-tensors, its codes, scales and
    zero points carried unchanged (`read_codes` of its format); kept tensors copied as stored."""
    source_format = format_of_variant(variant)
    if source_format.name == fmt.name:
        raise UsageError(f"{variant}: already a {fmt.name} variant")
    manifest = read_manifest(variant)
    codes = source_format.read_codes(variant)
    ckpt = codes.ckpt
    adapter = adapter_for(ckpt.config, where=str(variant / "config.json"))
    recorded = manifest.get("tensors") or {}
    entries: list[TensorPlan] = []
    for module in codes.modules:
        weight = f"{module}.weight"
        role = adapter.role_of(weight)
        label = parse_scheme_label((recorded.get(weight) or {}).get("scheme"))
        scheme = replace(codes.scheme(module), method=label.method if label else "gptq")
        if scheme.desc_act:
            raise PlanRefused(f"tensor {weight}: act-order codes cannot be written as compressed-tensors 0.20 "
                              "(`actorder: group` was removed)")
        try:
            check_bits(scheme.bits)
        except ValueError as e:
            raise PlanRefused(f"tensor {weight}: {e}")
        out_f, in_f = codes.weight_shape(module)
        entries.append(TensorPlan(weight, role, (out_f, in_f), "I32", codes.stored_bytes(module), scheme,
                                  packed_nbytes(out_f, in_f, scheme.bits, scheme.effective_group_size(in_f), scheme.sym),
                                  fused_group=adapter.fused_group(weight, role)))
    for name in codes.kept:
        info = ckpt.info(name)
        entries.append(TensorPlan(name, adapter.role_of(name), info.shape, info.dtype, info.nbytes, None, info.nbytes))
    entries.sort(key=lambda e: e.name)
    notes: list[str] = [f"converted from the {source_format.name} variant {variant}"]
    check_fused_groups(entries, True, notes)
    prof = manifest.get("profile") or {}
    try:
        profile = replace(load_profile(prof.get("name", "")), format=fmt.name)
    except ProfileError:
        profile = Profile(name=str(prof.get("name", "converted")), family=adapter.family, format=fmt.name)
    src = manifest.get("source") or {}
    plan = Plan(str(src.get("id") or variant), src.get("revision"), adapter.family, profile, entries, notes, fmt)

    def produce(add, progress) -> None:
        for e in plan.entries:
            try:
                add(packed(e.module, codes.read(e.module)) if e.quantized else {e.name: ckpt.read(e.name)})
            except ValueError as err:
                raise PlanRefused(f"tensor {e.name}: {err}")

    extra = {"converted_from": {"variant": str(variant.resolve()), "format": source_format.name,
                                "manifest_sha256": sha256_file(variant / "quantkit.json"),
                                "quantkit_version": QUANTKIT_VERSION},
             **{k: manifest[k] for k in ("method", "calibration", "fallbacks", "solver") if k in manifest}}
    out = Path(out) if out is not None else variant.with_name(variant.name + "-CT")
    path = write_variant(ckpt, plan, produce, out, overwrite=overwrite, extra=extra, source=src)
    log(f"converted {len(codes.modules)} quantized modules without requantizing")
    return path


FORMAT = CompressedTensorsFormat()
