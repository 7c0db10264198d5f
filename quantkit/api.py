"""The public, typed entry points. The CLI, the Makefile jobs and the tests all call these."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

from .adapters import Adapter, adapter_for
from .calibrate.runner import LayerStream
from .calibrate.store import CalibrationDir
from .checkpoint import Checkpoint
from .errors import QuantkitError
from .plan import Plan, build_plan
from .profiles import FORMATS, Profile, check_bits, load_profile, profile_for_bits
from .quantize.pipeline import LayerQuantizer, emit_unlayered, rtn_produce
from .variant import write_variant


def open_model(source: str | Path, revision: str | None = None) -> tuple[Checkpoint, Adapter]:
    ckpt = Checkpoint.open(source, revision)
    return ckpt, adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))


def parse_size(text: str | int) -> int:
    """'2GB', '500MB', '200KB' or a byte count."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*", str(text), re.I)
    if not m:
        raise QuantkitError(f"--max-shard-size {text}: expected a size such as 2GB or 500MB")
    unit = (m.group(2) or "B").upper().replace("I", "").rstrip("B") or "B"
    mult = {"B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[unit]
    return int(float(m.group(1)) * mult)


@dataclass
class QuantizeOptions:
    model: str
    out: Path
    bits: int | None = None
    profile: str | None = None
    group_size: int | None = None
    method: str | None = None  # overrides the profile's method for every rule
    revision: str | None = None
    overwrite: bool = False
    force: bool = False
    max_shard_size: str | int = "2GB"
    calib: Path | None = None  # a calibration directory; None = calibrate on the fly for GPTQ
    samples: str | None = None  # on-the-fly calibration samples (default: the shipped set)
    mode: str = "auto"
    min_tokens: int = 64
    max_tokens: int | None = 4096
    sequential: bool = False
    format: str | None = None  # "gptq" or "gguf" (one llama.cpp file); None = the profile's format


def resolve_profile(adapter: Adapter, *, bits: int | None, profile: str | None,
                    group_size: int | None = None, method: str | None = None, fmt: str | None = None) -> Profile:
    if fmt not in (None, *FORMATS):
        raise QuantkitError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if fmt == "gguf":
        from .gguf.writer import check_architecture
        check_architecture(adapter)
    if profile is not None:
        prof = load_profile(profile)
        if bits is not None:
            prof = prof.with_overrides(expert_bits=check_bits(bits))
    elif bits is not None:
        prof = profile_for_bits(adapter.default_profile, bits, fmt or "gptq")
    else:
        prof = profile_for_bits(adapter.default_profile, 4, fmt or "gptq")
    if fmt is not None and prof.format != fmt:
        prof = replace(prof, format=fmt)  # the profile's schemes, written as the asked format (checked by the plan)
    if group_size is not None and group_size != -1 and group_size <= 0:
        raise QuantkitError(f"--group-size {group_size}: must be a positive number of columns or -1 (per-channel)")
    return prof.with_overrides(group_size=group_size, method=method)


def make_plan(opts: QuantizeOptions) -> tuple[Checkpoint, Adapter, Plan]:
    ckpt, adapter = open_model(opts.model, opts.revision)
    prof = resolve_profile(adapter, bits=opts.bits, profile=opts.profile, group_size=opts.group_size,
                           method=opts.method, fmt=opts.format)
    if prof.format == "gguf":
        from .gguf.variant import check_source
        check_source(ckpt, adapter)
    return ckpt, adapter, build_plan(ckpt, adapter, prof, force=opts.force)


def quantize(opts: QuantizeOptions, log: Callable[[str], None] = lambda m: None) -> Path:
    """RTN, GPTQ from a calibration directory (`calib`), or GPTQ calibrated on the fly (one-shot,
    optionally sequential: each layer calibrated on the already-quantized layers' outputs)."""
    ckpt, adapter, plan = make_plan(opts)
    out = Path(opts.out).resolve()
    if out == ckpt.path.resolve() or ckpt.path.resolve() in out.parents:
        raise QuantkitError(f"--out {opts.out}: inside the source checkpoint; the source is never modified")
    if opts.sequential and opts.calib is not None:
        raise QuantkitError("--sequential calibrates each layer on the quantized layers before it, so it "
                            "cannot use a saved --calib; drop one of the two")
    methods = sorted({e.scheme.method for e in plan.quantized()})
    extra: dict = {"method": methods}
    if "gptq" not in methods:
        produce = partial(rtn_produce, ckpt, plan)
    elif opts.calib is not None:
        store = CalibrationDir(opts.calib)
        store.check_matches(ckpt)
        extra["calibration"] = _calib_summary(store.meta)
        produce = partial(_gptq_from_store, ckpt, plan, adapter, store, extra, log)
    else:
        from .calibrate.encode import encode_samples
        samples = encode_samples(ckpt, adapter, opts.samples, max_tokens=opts.max_tokens)
        extra["calibration"] = {"samples": samples.summary, "mode": opts.mode, "min_tokens": opts.min_tokens,
                                "sequential": opts.sequential, "on_the_fly": True}
        produce = partial(_gptq_on_the_fly, ckpt, plan, adapter, samples, opts, extra, log)
    writer = write_variant
    if plan.profile.format == "gguf":
        from .gguf.variant import write_gguf_variant as writer
    path = writer(ckpt, plan, produce, out, overwrite=opts.overwrite,
                  max_shard_bytes=parse_size(opts.max_shard_size), extra=extra)
    return path


def _report_fallbacks(q: LayerQuantizer, extra: dict, log) -> None:
    extra["fallbacks"] = q.fallbacks
    extra["solver"] = {"matrices": int(q.solver["matrices"]), "seconds": round(q.solver["seconds"], 3)}
    if q.fallbacks:
        by_role = Counter(f["role"] for f in q.fallbacks)
        log("warning: " + ", ".join(f"{n} {role} tensors" for role, n in sorted(by_role.items()))
            + " had no calibration tokens and were quantized with RTN instead of GPTQ (recorded in quantkit.json)")


def _gptq_from_store(ckpt, plan, adapter, store: CalibrationDir, extra: dict, log, add) -> None:
    q = LayerQuantizer(ckpt, plan, adapter)
    emit_unlayered(ckpt, plan, add)
    for n in range(adapter.shape.num_layers):
        q(n, store.layer(n), add)
        log(f"quantize: layer {n + 1}/{adapter.shape.num_layers}")
    _report_fallbacks(q, extra, log)


def _gptq_on_the_fly(ckpt, plan, adapter, samples, opts: QuantizeOptions, extra: dict, log,
                     add) -> None:
    q = LayerQuantizer(ckpt, plan, adapter)
    emit_unlayered(ckpt, plan, add)
    stream = LayerStream(ckpt, adapter)
    stream.run(samples.inputs, mode=opts.mode, min_tokens=opts.min_tokens,
               on_layer=lambda n, calib: q(n, calib, add, want_dequantized=opts.sequential) or None,
               progress=_progress(log, "quantize"))
    _report_fallbacks(q, extra, log)


def _progress(log, what: str):
    return lambda done, total: log(f"{what}: layer {done}/{total}")


@dataclass
class CalibrateOptions:
    model: str
    out: Path
    samples: str | None = None  # JSONL file or directory; default: the shipped set
    mode: str = "auto"
    min_tokens: int = 64
    max_tokens: int | None = 4096
    revision: str | None = None
    overwrite: bool = False


def calibrate(opts: CalibrateOptions, log: Callable[[str], None] = lambda m: None) -> tuple[Path, dict]:
    """Stream the model layer by layer over the samples; save H = XᵀX per input group, token counts
    and routing statistics. Returns the directory and the coverage report."""
    from .calibrate.store import FORMAT_VERSION, META, coverage_report, format_coverage, model_fingerprint, save_layer
    from .checkpoint import atomic_output_dir
    from .version import QUANTKIT_VERSION

    if opts.mode not in ("auto", "routed", "all"):
        raise QuantkitError(f"--mode {opts.mode}: choose auto, routed or all")
    from .calibrate.encode import encode_samples

    ckpt, adapter = open_model(opts.model, opts.revision)
    encoded = encode_samples(ckpt, adapter, opts.samples, max_tokens=opts.max_tokens)
    log(f"calibrating on {encoded.summary['samples']} samples: {encoded.summary['tokens']['text']} text and "
        f"{encoded.summary['tokens']['vision']} vision tokens")
    with atomic_output_dir(Path(opts.out), overwrite=opts.overwrite) as tmp:
        layers: dict[int, dict] = {}
        stream = LayerStream(ckpt, adapter)
        stream.run(encoded.inputs, mode=opts.mode, min_tokens=opts.min_tokens,
                   on_layer=lambda n, calib: layers.__setitem__(n, save_layer(tmp, calib)),
                   progress=_progress(log, "calibrate"))
        report = coverage_report(layers, opts.min_tokens)
        meta = {"format_version": FORMAT_VERSION, "quantkit_version": QUANTKIT_VERSION,
                "source": {"id": ckpt.source, "revision": ckpt.revision, "fingerprint": model_fingerprint(ckpt)},
                "samples": encoded.summary, "mode": opts.mode, "min_tokens": opts.min_tokens,
                "coverage": report, "layers": {str(n): rec for n, rec in layers.items()}}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
    for line in format_coverage(report, opts.min_tokens, opts.mode):
        log(line)
    return Path(opts.out), report


def _calib_summary(meta: dict) -> dict:
    return {"dir_source": meta["source"], "samples": meta["samples"], "mode": meta["mode"],
            "min_tokens": meta["min_tokens"], "coverage": meta["coverage"]}
