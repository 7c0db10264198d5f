"""The public, typed entry points. The CLI, the Makefile jobs and the tests all call these.

Each reads top to bottom as the pipeline does: open the checkpoint, resolve the profile and its
format, plan, (calibrate,) produce the tensors, let the format write the variant.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from .adapters import Adapter, adapter_for
from .allocate import allocate, weight_budget
from .calibrate.encode import encode_samples
from .calibrate.runner import LayerStream
from .calibrate.sensitivity import DEFAULT_TOKENS as SENSITIVITY_TOKENS
from .calibrate.sensitivity import FILE as SENSITIVITY_FILE
from .calibrate.sensitivity import RANK, InputStore, output_fishers, pick_samples, save_fishers, text_predictions
from .calibrate.store import FORMAT_VERSION, META, CalibrationDir, coverage_report, format_coverage, model_fingerprint, save_layer
from .checkpoint import Checkpoint
from .errors import CheckpointError, OutputError, PlanRefused, UsageError
from .format import get_format
from .outdir import output_dir
from .plan import Plan, build_plan
from .profiles import resolve_profile
from .progress import report
from .quantize.pipeline import gptq_from_calibration, gptq_on_the_fly, rtn_produce
from .runstate import RunProgress
from .units import parse_size
from .version import QUANTKIT_VERSION

MODES = ("auto", "routed", "all")


def open_model(source: str | Path, revision: str | None = None) -> tuple[Checkpoint, Adapter]:
    """The checkpoint and its family's adapter, refused in one line before any work when its config
    and its tensors disagree (a config edited to other widths or layer counts)."""
    ckpt = Checkpoint.open(source, revision)
    ckpt.refuse_non_finite = True  # a source to quantize: NaN/Inf weights are refused when first read
    adapter = adapter_for(ckpt.config, where=str(ckpt.path / "config.json"))
    ckpt = adapter.checkpoint_view(ckpt)  # per-expert 2-D weights where the family stores experts fused
    check_config_matches_tensors(ckpt, adapter)
    return ckpt, adapter


def check_config_matches_tensors(ckpt: Checkpoint, adapter: Adapter) -> None:
    """Every tensor the config implies (adapter.tensor_shapes) exists with that shape."""
    try:
        expected = adapter.tensor_shapes()
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{ckpt.path / 'config.json'}: a field has the wrong type or is missing "
                              f"({e.__class__.__name__}: {e})") from None
    where = ckpt.path / "config.json"
    for name, shape in sorted(expected.items()):
        try:
            info = ckpt.info(name)
        except CheckpointError:
            raise CheckpointError(f"{where} implies a tensor {name} {list(shape)} that the checkpoint does not have; "
                                  "the config does not describe these weights") from None
        if tuple(info.shape) != tuple(shape):
            raise CheckpointError(f"{where} implies {name} of shape {list(shape)}, but {info.shard} stores "
                                  f"{list(info.shape)}; the config does not describe these weights")
    extra = sorted(set(ckpt.names()) - set(expected))
    if extra:
        info = ckpt.info(extra[0])
        raise CheckpointError(f"{info.shard} stores {extra[0]}, which {where} does not imply ({len(extra)} such "
                              "tensors); the config does not describe these weights")


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
    resume: bool = False  # continue an interrupted run on the same --out (same options and source)
    chat_template: Path | None = None  # a Jinja chat template file, for a model without one
    target_size: str | int | None = None  # weight bytes: bits per unit chosen from --calib (quantkit.allocate)
    vram: str | int | None = None  # card memory: weights + KV cache at `context` + allowance (quantkit.serving)
    context: int = 32768  # tokens served, for `vram`
    runtime: str | None = None  # the runtime whose units the allocation keeps (default: the format's first)


def make_plan(opts: QuantizeOptions, log: Callable[[str], None] = lambda m: None) -> tuple[Checkpoint, Adapter, Plan]:
    ckpt, adapter = open_model(opts.model, opts.revision)
    prof = resolve_profile(adapter, bits=opts.bits, profile=opts.profile, group_size=opts.group_size,
                           method=opts.method, fmt=opts.format)
    get_format(prof.format).check_source(ckpt, adapter)
    if opts.target_size is None and opts.vram is None:
        if opts.runtime is not None:
            raise UsageError("--runtime picks the allocation units of --target-size / --vram; give one of them")
        return ckpt, adapter, build_plan(ckpt, adapter, prof, force=opts.force)
    if opts.calib is None:
        raise UsageError("--target-size / --vram choose bits from a saved calibration: give --calib DIR "
                         "(`quantkit calibrate` output)")
    budget, vram = weight_budget(ckpt.config, ckpt.path, target_size=opts.target_size, vram=opts.vram,
                                 context=opts.context)
    store = CalibrationDir(opts.calib)
    store.check_matches(ckpt)
    alloc = allocate(ckpt, adapter, prof, store, budget=budget, runtime=opts.runtime, vram=vram, log=log)
    # per-expert units mix widths inside vLLM's fused groups: written for transformers, as asked
    plan = build_plan(ckpt, adapter, alloc.profile(prof), force=opts.force or alloc.runtime == "transformers")
    if plan.predicted_bytes != alloc.predicted_bytes:
        raise PlanRefused(f"allocation predicted {alloc.predicted_bytes} bytes but the plan {plan.predicted_bytes}; "
                          "a bug: please report it")
    plan.allocation = alloc
    return ckpt, adapter, plan


def quantize(opts: QuantizeOptions, log: Callable[[str], None] = lambda m: None) -> Path:
    """RTN, GPTQ from a calibration directory (`calib`), or GPTQ calibrated on the fly (one-shot,
    optionally sequential: each layer calibrated on the already-quantized layers' outputs)."""
    _check_calibration_options(opts.mode, opts.min_tokens, opts.max_tokens)
    max_shard_bytes = parse_size(opts.max_shard_size)
    if max_shard_bytes <= 0:
        raise UsageError(f"--max-shard-size {opts.max_shard_size}: must be a positive size such as 2GB")
    ckpt, adapter, plan = make_plan(opts, log)
    out = Path(opts.out).resolve()
    if out == ckpt.path.resolve() or ckpt.path.resolve() in out.parents:
        raise OutputError(f"--out {opts.out}: inside the source checkpoint; the source is never modified")
    if opts.sequential and opts.calib is not None:
        raise UsageError("--sequential calibrates each layer on the quantized layers before it, so it "
                         "cannot use a saved --calib; drop one of the two")
    methods = sorted({e.scheme.method for e in plan.quantized()})
    extra: dict = {"method": methods}
    if plan.allocation is not None:
        extra["allocation"] = plan.allocation.to_dict()
    if "gptq" not in methods:
        produce = partial(rtn_produce, ckpt, plan)
    elif opts.calib is not None:
        store = CalibrationDir(opts.calib)
        store.check_matches(ckpt)
        extra["calibration"] = _calib_summary(store.meta)
        produce = partial(gptq_from_calibration, ckpt, plan, adapter, store.layer, log=log)
    else:
        samples = encode_samples(ckpt, adapter, opts.samples, max_tokens=opts.max_tokens,
                                 chat_template=opts.chat_template, log=log)
        extra["calibration"] = {"samples": samples.summary, "mode": opts.mode, "min_tokens": opts.min_tokens,
                                "sequential": opts.sequential, "on_the_fly": True}
        produce = partial(gptq_on_the_fly, ckpt, plan, adapter, LayerStream(ckpt, adapter), samples.inputs,
                          mode=opts.mode, min_tokens=opts.min_tokens, sequential=opts.sequential, log=log)
    run = run_record("quantize", ckpt, opts, calibration=extra.get("calibration"))
    return plan.format.write_variant(ckpt, plan, produce, out, overwrite=opts.overwrite,
                                     max_shard_bytes=max_shard_bytes, extra=extra, resume=opts.resume, run=run)


def run_record(command: str, ckpt: Checkpoint, opts, **more) -> dict:
    """What an interrupted run must match to be resumed: the command, the source (id, revision, the
    config and tensor layout, each weight file's size and mtime) and every option but --out/--overwrite/--resume."""
    files = sorted(p for p in ckpt.path.iterdir() if p.is_file())
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()
               if k not in ("out", "overwrite", "resume")}
    return json.loads(json.dumps({
        "command": command, "quantkit_version": QUANTKIT_VERSION,
        "source": {"id": ckpt.source, "revision": ckpt.revision, "fingerprint": model_fingerprint(ckpt),
                   "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}},
        "options": options, **more}, sort_keys=True, default=str))


def _check_calibration_options(mode: str, min_tokens: int, max_tokens: int | None) -> None:
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: choose auto, routed or all")
    if min_tokens < 0:
        raise UsageError(f"--min-tokens {min_tokens}: must be 0 or more (0 turns the all-token supplement off)")
    if max_tokens is not None and max_tokens <= 0:
        raise UsageError(f"--max-tokens {max_tokens}: must be a positive number of tokens")


def _progress(log, what: str):
    return lambda done, total: report(log, what, done, total)


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
    resume: bool = False  # continue an interrupted run on the same --out (same options and source)
    chat_template: Path | None = None  # a Jinja chat template file, for a model without one
    sensitivity_tokens: int = SENSITIVITY_TOKENS  # tokens of the output-sensitivity pass (0: skip it)


def calibrate(opts: CalibrateOptions, log: Callable[[str], None] = lambda m: None) -> tuple[Path, dict]:
    """Stream the model layer by layer over the samples; save H = XᵀX per input group, token counts
    and routing statistics. Returns the directory and the coverage report."""
    _check_calibration_options(opts.mode, opts.min_tokens, opts.max_tokens)
    if opts.sensitivity_tokens < 0:
        raise UsageError(f"--sensitivity-tokens {opts.sensitivity_tokens}: give a token count, or 0 to skip the pass")
    ckpt, adapter = open_model(opts.model, opts.revision)
    encoded = encode_samples(ckpt, adapter, opts.samples, max_tokens=opts.max_tokens, chat_template=opts.chat_template,
                             log=log)
    log(f"calibrating on {encoded.summary['samples']} samples: {encoded.summary['tokens']['text']} text and "
        f"{encoded.summary['tokens']['vision']} vision tokens")
    run = run_record("calibrate", ckpt, opts, samples=encoded.summary["sha256"])
    with output_dir(Path(opts.out), overwrite=opts.overwrite, resume=opts.resume, run=run) as rundir:
        tmp = rundir.result
        progress = RunProgress(rundir.state, lambda d: {}, None)  # the layer files stay in the result
        stream = LayerStream(ckpt, adapter)
        start = None
        if progress.step is not None:  # continue after the last checkpointed layer
            start = (progress.step + 1, progress.restore())
        layers = {int(n): rec for n, rec in progress.record().get("layers", {}).items()}
        inputs = None
        if opts.sensitivity_tokens:  # the chosen samples' layer inputs, for the backward pass after
            lengths = [int(s["input_ids"].shape[-1]) for s in encoded.inputs]
            inputs = InputStore(rundir.partial / "sensitivity-inputs", pick_samples(lengths, opts.sensitivity_tokens))
        result = stream.run(encoded.inputs, mode=opts.mode, min_tokens=opts.min_tokens, start=start,
                            on_layer=lambda n, calib: layers.__setitem__(n, save_layer(tmp, calib)),
                            after_layer=lambda n, states: progress.save(
                                n, {"layers": {str(k): v for k, v in layers.items()}}, states),
                            before_layer=inputs.save if inputs else None,
                            progress=_progress(log, "calibrate"))
        report = coverage_report(layers, opts.min_tokens)
        meta = {"format_version": FORMAT_VERSION, "quantkit_version": QUANTKIT_VERSION,
                "source": {"id": ckpt.source, "revision": ckpt.revision, "fingerprint": model_fingerprint(ckpt)},
                "samples": encoded.summary, "mode": opts.mode, "min_tokens": opts.min_tokens,
                "coverage": report, "layers": {str(n): rec for n, rec in layers.items()}}
        if inputs:
            fishers = output_fishers(stream, inputs, result.hidden, [text_predictions(x) for x in encoded.inputs],
                                     progress=_progress(log, "sensitivity"))
            meta["sensitivity"] = {"samples": len(inputs.chosen), "rank": RANK, "file": SENSITIVITY_FILE,
                                   "tokens": sum(lengths[i] for i in inputs.chosen),
                                   "layers": save_fishers(tmp, fishers)}
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
    for line in format_coverage(report, opts.min_tokens, opts.mode):
        log(line)
    return Path(opts.out), report


def _calib_summary(meta: dict) -> dict:
    return {"dir_source": meta["source"], "samples": meta["samples"], "mode": meta["mode"],
            "min_tokens": meta["min_tokens"], "coverage": meta["coverage"]}
