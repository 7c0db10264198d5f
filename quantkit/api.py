"""The public, typed entry points. The CLI, the Makefile jobs and the tests all call these.

Each reads top to bottom as the pipeline does: open the checkpoint, resolve the profile and its
format, plan, (calibrate,) produce the tensors, let the format write the variant.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from .adapters import Adapter, adapter_for
from .calibrate.encode import encode_samples
from .calibrate.runner import LayerStream
from .calibrate.store import FORMAT_VERSION, META, CalibrationDir, coverage_report, format_coverage, model_fingerprint, save_layer
from .checkpoint import Checkpoint, atomic_output_dir
from .errors import OutputError, UsageError
from .format import get_format
from .plan import Plan, build_plan
from .profiles import resolve_profile
from .quantize.pipeline import gptq_from_calibration, gptq_on_the_fly, rtn_produce
from .units import parse_size
from .version import QUANTKIT_VERSION

MODES = ("auto", "routed", "all")


def open_model(source: str | Path, revision: str | None = None) -> tuple[Checkpoint, Adapter]:
    ckpt = Checkpoint.open(source, revision)
    return ckpt, adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))


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
    format: str | None = None  # a registered format (quantkit.format); None = the profile's format


def make_plan(opts: QuantizeOptions) -> tuple[Checkpoint, Adapter, Plan]:
    ckpt, adapter = open_model(opts.model, opts.revision)
    prof = resolve_profile(adapter, bits=opts.bits, profile=opts.profile, group_size=opts.group_size,
                           method=opts.method, fmt=opts.format)
    get_format(prof.format).check_source(ckpt, adapter)
    return ckpt, adapter, build_plan(ckpt, adapter, prof, force=opts.force)


def quantize(opts: QuantizeOptions, log: Callable[[str], None] = lambda m: None) -> Path:
    """RTN, GPTQ from a calibration directory (`calib`), or GPTQ calibrated on the fly (one-shot,
    optionally sequential: each layer calibrated on the already-quantized layers' outputs)."""
    ckpt, adapter, plan = make_plan(opts)
    out = Path(opts.out).resolve()
    if out == ckpt.path.resolve() or ckpt.path.resolve() in out.parents:
        raise OutputError(f"--out {opts.out}: inside the source checkpoint; the source is never modified")
    if opts.sequential and opts.calib is not None:
        raise UsageError("--sequential calibrates each layer on the quantized layers before it, so it "
                         "cannot use a saved --calib; drop one of the two")
    methods = sorted({e.scheme.method for e in plan.quantized()})
    extra: dict = {"method": methods}
    if "gptq" not in methods:
        produce = partial(rtn_produce, ckpt, plan)
    elif opts.calib is not None:
        store = CalibrationDir(opts.calib)
        store.check_matches(ckpt)
        extra["calibration"] = _calib_summary(store.meta)
        produce = partial(gptq_from_calibration, ckpt, plan, adapter, store.layer, log=log)
    else:
        samples = encode_samples(ckpt, adapter, opts.samples, max_tokens=opts.max_tokens)
        extra["calibration"] = {"samples": samples.summary, "mode": opts.mode, "min_tokens": opts.min_tokens,
                                "sequential": opts.sequential, "on_the_fly": True}
        produce = partial(gptq_on_the_fly, ckpt, plan, adapter, LayerStream(ckpt, adapter), samples.inputs,
                          mode=opts.mode, min_tokens=opts.min_tokens, sequential=opts.sequential, log=log)
    return plan.format.write_variant(ckpt, plan, produce, out, overwrite=opts.overwrite,
                                     max_shard_bytes=parse_size(opts.max_shard_size), extra=extra)


def _progress(log, what: str):
    return lambda done, total: log(f"{what}: layer {done}/{total}")


def convert(variant: str | Path, to_format: str, out: str | Path | None = None, *, overwrite: bool = False,
            log: Callable[[str], None] = lambda m: None) -> Path:
    """An existing variant written as another format, its codes kept (e.g. `export-gguf`)."""
    return get_format(to_format).convert(Path(variant), None if out is None else Path(out), overwrite=overwrite,
                                         log=log)


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
    if opts.mode not in MODES:
        raise UsageError(f"--mode {opts.mode}: choose auto, routed or all")
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
