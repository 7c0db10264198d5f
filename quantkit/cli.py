"""`quantkit` command line. Each command parses options, calls one API function, prints.

Errors are `QuantkitError`s, printed as one line with a non-zero exit; never a traceback
(set QUANTKIT_DEBUG=1 to see one for an unexpected failure).
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from . import api, publish
from .allocate import RUNTIMES
from .api import SENSITIVITY_TOKENS, CalibrateOptions, QuantizeOptions, convert, make_plan, open_model
from .errors import OutputError, QuantkitError, UsageError, VariantCorrupt
from .format import all_runtimes, format_names, formats
from .manifest import verify_files
from .profile import ProfileOptions, parse_contexts, reference_of
from .progress import ConsoleLog
from .profile import profile as run_profile
from .publish import PackageOptions, PushOptions
from .reference import tiny, tiny_qwen3
from .units import human_bytes as _human
from .verify import export_vision_onnx
from .verify import verify as verify_variant


def _handled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QuantkitError as e:
            click.echo(f"error: {e}{_kept(e)}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as e:
            kept = getattr(e, "kept_partial", None)
            click.echo(f"interrupted: progress kept in {kept}; rerun the same command with --resume to continue"
                       if kept else "interrupted: nothing was written", err=True)
            sys.exit(130)
        except OSError as e:  # the machine, not quantkit: a full disk, a read-only or vanished path
            if os.environ.get("QUANTKIT_DEBUG"):
                raise
            click.echo(f"error: {e.filename or 'I/O'}: {e.strerror or e}{_kept(e)}", err=True)
            sys.exit(2)
        except Exception as e:  # a bug: still one line unless asked
            if os.environ.get("QUANTKIT_DEBUG"):
                raise
            click.echo(f"internal error: {e.__class__.__name__}: {e} (QUANTKIT_DEBUG=1 shows the traceback)",
                       err=True)
            sys.exit(3)
    return wrapper


def _kept(e: BaseException) -> str:
    kept = getattr(e, "kept_partial", None)
    return f" (progress kept in {kept}: rerun with --resume to continue)" if kept else ""


def _with(options):
    def deco(fn):
        for o in reversed(options):
            fn = o(fn)
        return fn
    return deco


@click.group()
@click.version_option(package_name="quantkit")
def main():
    """Quantize Mixture-of-Experts (vision-)language models into deployable low-bit variants."""


@main.command()
@click.argument("model")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@_handled
def inspect(model, revision):
    """Parameters and bytes per role, and the MoE shape, of MODEL (a directory or Hub id)."""
    from math import prod

    ckpt, adapter = open_model(model, revision)
    rows: dict[str, list] = {}
    for info in ckpt.infos():
        role = adapter.role_of(info.name)
        r = rows.setdefault(role.label, [0, 0, 0, set()])
        r[0] += 1
        r[1] += prod(info.shape)
        r[2] += info.nbytes
        r[3].add(info.dtype)
    s = adapter.shape
    click.echo(f"{ckpt.source}  family={adapter.family}  model_type={ckpt.config.get('model_type')}")
    experts = ", ".join(f"{n} {m} (width {s.expert_intermediate[m]})" for m, n in s.experts.items())
    click.echo(f"MoE: {len(s.moe_layers)} of {s.num_layers} layers, experts per layer: {experts}, "
               f"top-{s.top_k}, {s.shared_experts} shared; modalities: {', '.join(s.modalities)}")
    click.echo(f"{'role':<24}{'tensors':>9}{'params':>16}{'bytes':>14}  dtype")
    tot = [0, 0, 0]
    for label, (n, p, b, dts) in sorted(rows.items()):
        click.echo(f"{label:<24}{n:>9}{p:>16,}{_human(b):>14}  {','.join(sorted(dts))}")
        tot = [tot[0] + n, tot[1] + p, tot[2] + b]
    click.echo(f"{'total':<24}{tot[0]:>9}{tot[1]:>16,}{_human(tot[2]):>14}")


def _quantize_options(fn):
    opts = [
        click.argument("model"),
        click.option("--bits", type=int, default=None,
                     help="Routed-expert bits (2..8; GPTQ and GGUF take 2, 3, 4, 8); picks the family's -wN profile."),
        click.option("--profile", default=None, help="A profile file or shipped profile name (profiles/*.yaml)."),
        click.option("--group-size", type=int, default=None, help="Override every rule's group size (-1 = per-channel)."),
        click.option("--method", type=click.Choice(["rtn", "gptq"]), default=None, help="Override the profile's method."),
        click.option("--revision", default=None, help="Hub revision of MODEL."),
        click.option("--force", is_flag=True, help="Write a plan that a target runtime cannot load (mixed bits in a fused group)."),
    ]
    return _with(opts)(fn)


_allocation_options = [
    click.option("--target-size", default=None,
                 help="Weight bytes (e.g. 12GB): bits per unit chosen from --calib's statistics, exact under the budget."),
    click.option("--vram", default=None,
                 help="Card memory (e.g. 24GiB): --target-size = it minus the serving estimate's KV cache at "
                      "--context, activations and runtime allowance."),
    click.option("--context", type=int, default=32768, show_default=True, help="Context tokens for --vram."),
    click.option("--runtime", type=click.Choice(list(RUNTIMES)), default=None,
                 help="The allocation's units: vllm (one scheme per FusedMoE layer and modality), llama.cpp (one "
                      "type per stacked tensor), transformers (per expert). Default: the format's first runtime."),
]


@main.command()
@_quantize_options
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="A calibration directory (needed by --target-size / --vram).")
@_with(_allocation_options)
@click.option("--format", "fmt", type=click.Choice(format_names()), default=None, help="Output format.")
@_handled
def plan(model, bits, profile, group_size, method, revision, force, calib, target_size, vram, context, runtime, fmt):
    """Show what `quantize` would do: scheme and bytes per role, fallbacks. Writes nothing."""

    _, _, p = make_plan(QuantizeOptions(model=model, out=Path("."), bits=bits, profile=profile,
                                        group_size=group_size, method=method, revision=revision, force=force,
                                        calib=calib, target_size=target_size, vram=vram, context=context,
                                        runtime=runtime, format=fmt), log=_log)
    if p.allocation is not None:
        for line in p.allocation.lines():
            click.echo(line)
    _print_plan(p)


def _print_plan(p) -> None:
    click.echo(f"profile {p.profile.name} ({p.profile.source})")
    click.echo(f"{'role':<24}{'tensors':>9}{'source':>13}{'planned':>13}  schemes")
    for label, r in p.by_role().items():
        click.echo(f"{label:<24}{r['tensors']:>9}{_human(r['source_bytes']):>13}{_human(r['planned_bytes']):>13}"
                   f"  {', '.join(r['schemes'])}")
    src = sum(e.source_bytes for e in p.entries)
    click.echo(f"{'total':<24}{len(p.entries):>9}{_human(src):>13}{_human(p.predicted_bytes):>13}")
    for note in p.notes:
        click.echo(f"note: {note}")


_log = ConsoleLog()  # lines to stderr; progress bars per stage when stderr is a terminal


_calibration_options = [
    click.option("--samples", default=None, help="Calibration JSONL file or directory (default: the shipped multimodal set)."),
    click.option("--mode", type=click.Choice(["auto", "routed", "all"]), default="auto", show_default=True,
                 help="Expert coverage: routed tokens only, all tokens of the modality, or routed with "
                      "all-token statistics for experts under --min-tokens."),
    click.option("--min-tokens", type=int, default=64, show_default=True,
                 help="Routed tokens below which an expert counts as under-covered."),
    click.option("--max-tokens", type=int, default=4096, show_default=True, help="Longest sample accepted."),
    click.option("--chat-template", type=click.Path(path_type=Path), default=None,
                 help="A Jinja chat template file for a model that ships none (default: its own; without one, "
                      "samples are calibrated as plain text and the record says so)."),
    click.option("--resume", is_flag=True,
                 help="Continue an interrupted run on the same --out from its last finished layer "
                      "(same options and source; the result is the same bytes as an uninterrupted run)."),
]


@main.command()
@_quantize_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Variant directory to create.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="A calibration directory from `quantkit calibrate` (else GPTQ calibrates on the fly).")
@click.option("--sequential", is_flag=True,
              help="On-the-fly GPTQ where each layer is calibrated on the quantized layers before it.")
@_with(_allocation_options)
@_with(_calibration_options)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (only once the new variant is complete).")
@click.option("--max-shard-size", default="2GB", show_default=True, help="Largest safetensors shard.")
@click.option("--format", "fmt", type=click.Choice(format_names()), default=None,
              help="Output format; " + "; ".join(f"{f.name}: {f.description}" for f in formats())
                   + ". Default: the profile's format (the default format for --bits).")
@_handled
def quantize(model, bits, profile, group_size, method, revision, force, out, calib, sequential, target_size, vram,
             context, runtime, samples, mode, min_tokens, max_tokens, chat_template, resume, overwrite, max_shard_size,
             fmt):
    """Quantize MODEL (directory or Hub id) into a GPTQ-format (or --format) variant at --out."""
    path = api.quantize(QuantizeOptions(model=model, out=out, bits=bits, profile=profile, group_size=group_size,
                                        method=method, revision=revision, overwrite=overwrite, force=force,
                                        max_shard_size=max_shard_size, calib=calib, samples=samples, mode=mode,
                                        min_tokens=min_tokens, max_tokens=max_tokens, sequential=sequential,
                                        format=fmt, resume=resume, chat_template=chat_template,
                                        target_size=target_size, vram=vram, context=context, runtime=runtime), log=_log)
    click.echo(f"variant written: {path}")


@main.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Calibration directory to create.")
@_with(_calibration_options)
@click.option("--revision", default=None, help="Hub revision of MODEL.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--sensitivity-tokens", type=int, default=SENSITIVITY_TOKENS, show_default=True,
              help="Tokens of calibration samples backpropagated to measure how much each MoE layer's "
                   "output matters to the predictions (weights --target-size / --vram allocation); 0 skips it.")
@_handled
def calibrate(model, out, samples, mode, min_tokens, max_tokens, chat_template, resume, revision, overwrite,
              sensitivity_tokens):
    """Run MODEL layer by layer over multimodal samples; save per-module statistics for GPTQ."""
    path, _ = api.calibrate(CalibrateOptions(model=model, out=out, samples=samples, mode=mode, min_tokens=min_tokens,
                                             max_tokens=max_tokens, revision=revision, overwrite=overwrite,
                                             resume=resume, chat_template=chat_template,
                                             sensitivity_tokens=sensitivity_tokens), log=_log)
    click.echo(f"calibration written: {path}")


@main.command("package")
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="A `quantkit profile` output directory (report.md / report.json): its tradeoff table goes into the card.")
@click.option("--base-model", default=None, help="Hub id of the base model, when the variant was made from a local directory.")
@click.option("--license", "license_", default=None, help="License id for the card (default: read from the base model's card).")
@click.option("--name", default=None, help="The <base> part of the variant's name (default: the base model's repo name).")
@click.option("--repo", default=None, help="The repo the card's commands name (ORG/NAME; {name} as in `push`).")
@click.option("--revision", default=None, help="The branch the card's commands name ('auto': the name's suffix).")
@click.option("--verdicts", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="`quantkit verify --json` output to record in the card.")
@click.option("--no-verify", is_flag=True, help="Do not run `quantkit verify` for the card's runtime verdicts.")
@_handled
def package_cmd(variant, report, base_model, license_, name, repo, revision, verdicts, no_verify):
    """Make VARIANT ready to publish: check its checksums, write its model card (README.md), record both in quantkit.json."""

    r = publish.package(PackageOptions(variant=variant, report=report, base_model=base_model, license=license_, name=name,
                           repo=repo, revision=revision, verdicts=verdicts, run_verify=not no_verify), log=_log)
    click.echo(f"packaged {r.variant} as {r.name.full}: card {r.card.name}, {r.files} files, {_human(r.bytes)}")


@main.command("verify-files")
@click.argument("variant", type=click.Path(path_type=Path))
@_handled
def verify_files_cmd(variant):
    """Check the sha256 and size of every file quantkit.json lists, and that VARIANT holds no other file."""

    report = verify_files(variant)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
        raise VariantCorrupt(report.summary())
    click.echo(report.summary())


@main.command("push")
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--repo", required=True, help="ORG/NAME; {name}, {base} and {suffix} come from the variant's name.")
@click.option("--revision", default="main", show_default=True,
              help="Branch; 'auto' = the variant's name suffix (a branch per variant, main's card lists them).")
@click.option("--private", is_flag=True, help="Create the repo private (an existing repo keeps its visibility).")
@click.option("--dry-run", is_flag=True, help="Print exactly what would be uploaded, and where; send nothing.")
@click.option("--update", is_flag=True, help="Replace a branch that holds other content (one new commit on top).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a Hub request may go without an answer (default: QUANTKIT_HUB_TIMEOUT or 60).")
@_handled
def push_cmd(variant, repo, revision, private, dry_run, update, timeout):
    """Upload a packaged VARIANT to the Hub in one commit (token: HF_TOKEN or `hf auth login`; HF_ENDPOINT honoured)."""

    result = publish.push(PushOptions(variant=variant, repo=repo, revision=revision, private=private, dry_run=dry_run,
                             update=update, timeout=timeout), log=_log)
    for line in result.lines():
        click.echo(line)


@main.command()
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--runtime", "runtimes", type=click.Choice([*all_runtimes(), "all"]),
              multiple=True, default=("all",), show_default=True, help="Runtime(s) to check; repeatable.")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="Source checkpoint for the bit-identical check of kept tensors (default: quantkit.json's source).")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON report (for CI) instead of lines.")
@click.option("--no-load", is_flag=True, help="Skip loading the model with quantkit.load (static rules still run).")
@_handled
def verify(variant, runtimes, source, as_json, no_load):
    """Prove VARIANT loads where it claims: file integrity, runtime rules, onnxruntime cross-check.
    Exit 0 only if every requested runtime is servable."""

    report = verify_variant(variant, runtimes=runtimes, source=source, load=not no_load)
    click.echo(report.dumps() if as_json else "\n".join(report.lines()))
    sys.exit(0 if report.servable else 1)


@main.command("export-onnx")
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--component", type=click.Choice(["vision"]), required=True,
              help="What to export: the vision tower + resampler (one image per call).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="ONNX file to write (default: VARIANT/onnx/vision.onnx, recorded in quantkit.json).")
@_handled
def export_onnx(variant, component, out):
    """Export a component of VARIANT to ONNX and validate it with onnxruntime against torch."""

    errors = export_vision_onnx(variant, out)
    for size, err in errors.items():
        click.echo(f"{component} {size}: max abs error onnxruntime vs torch {err:.3g}")
    click.echo(f"onnx written: {out or Path(variant) / 'onnx' / 'vision.onnx'}")


@main.command("profile")
@click.argument("models", nargs=-1, required=True)
@click.option("--eval", "eval_file", default=None,
              help="Samples JSONL whose last message is the reference answer (default: the trained "
                   "reference's held-out task split, written to OUT/eval/).")
@click.option("--context", default="4096,32768", show_default=True,
              help="Context lengths (tokens) for the serving VRAM estimate, comma-separated.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences served at once (VRAM estimate).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("profile-report"), show_default=True,
              help="Directory for report.json, report.md and tradeoff.png.")
@click.option("--items-per-kind", type=int, default=40, show_default=True,
              help="Built-in evaluation split: items of each task kind.")
@click.option("--no-cuda", is_flag=True, help="Do not measure GPU memory even when CUDA is available.")
@_handled
def profile_cmd(models, eval_file, context, batch, out, items_per_kind, no_cuda):
    """Memory and accuracy of variants against their reference: MODELS = REFERENCE VARIANT... (or a
    single VARIANT whose quantkit.json names a local source directory)."""

    models = list(models)
    if len(models) == 1:
        ref = reference_of(models[0])
        if ref is None:
            raise UsageError(f"{models[0]}: give the reference too (quantkit profile REFERENCE VARIANT...); "
                                "the variant's quantkit.json names no local source directory")
        models.insert(0, ref)
    report = run_profile(ProfileOptions(reference=models[0], variants=models[1:], out=out, eval=eval_file,
                                contexts=parse_contexts(context), batch=batch, eval_items_per_kind=items_per_kind,
                                cuda="off" if no_cuda else "auto"), log=_log)
    for v in report["variants"]:
        a = v["accuracy"]
        click.echo(f"{v['name']:<32}{_human(v['memory']['file_bytes']):>12}  KL (text) {a['kl']['text']:.2e}  "
                   f"top-1 {a['top1']['text']:.3f}  task {a['task']['accuracy']:.3f}")
    click.echo(f"report written: {out / 'report.md'}, {out / 'report.json'}, {out / 'tradeoff.png'}")


@main.command("export-gguf")
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="GGUF variant directory to create (default: VARIANT-GGUF).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (only once the new variant is complete).")
@_handled
def export_gguf_cmd(variant, out, overwrite):
    """Convert a GPTQ VARIANT into a GGUF variant for llama.cpp, keeping GPTQ's codes (8-bit g32 ->
    Q8_0, 4-bit g32 -> Q4_0 / Q4_1); refuses, naming the tensor, where no GGUF type holds a scheme exactly."""

    path = convert(variant, "gguf", out, overwrite=overwrite, log=_log)
    click.echo(f"variant written: {path}")


# build-tiny KIND: the builders of quantkit.reference (real transformers classes, Hub layout)
_TINY = {"vl": tiny.build_tiny_vl, "text": tiny.build_tiny_text_moe,
         "qwen3-moe": tiny_qwen3.build_tiny_qwen3_moe, "qwen3-vl-moe": tiny_qwen3.build_tiny_qwen3_vl_moe}


@main.command("convert")
@click.argument("variant", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(format_names()), required=True, help="The format to write.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Variant directory to create (default: beside VARIANT, with the format's suffix).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (only once the new variant is complete).")
@_handled
def convert_cmd(variant, fmt, out, overwrite):
    """Write VARIANT in another format with the same codes (no requantization); refuses, naming the
    tensor, where the target format cannot hold a scheme exactly."""
    path = convert(variant, fmt, out, overwrite=overwrite, log=_log)
    click.echo(f"variant written: {path}")


@main.command("build-tiny")
@click.argument("kind", type=click.Choice(list(_TINY)))
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_handled
def build_tiny(kind, out, seed):
    """Build a tiny model with the real transformers class: ERNIE-4.5-VL (vl, the embedded default),
    ERNIE-4.5 text MoE (text), Qwen3-MoE (qwen3-moe), Qwen3-VL-MoE (qwen3-vl-moe)."""

    if out.exists():
        raise OutputError(f"--out {out}: already exists; remove it or choose another path")
    path = _TINY[kind](out, seed=seed)
    click.echo(f"tiny {kind} model written: {path}")


if __name__ == "__main__":
    main()
