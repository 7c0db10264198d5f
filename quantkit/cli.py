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

from .errors import QuantkitError


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def _handled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except QuantkitError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: nothing was written", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: still one line unless asked
            if os.environ.get("QUANTKIT_DEBUG"):
                raise
            click.echo(f"internal error: {e.__class__.__name__}: {e} (QUANTKIT_DEBUG=1 shows the traceback)",
                       err=True)
            sys.exit(3)
    return wrapper


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
    from .api import open_model
    from .plan import _numel

    ckpt, adapter = open_model(model, revision)
    rows: dict[str, list] = {}
    for info in ckpt.infos():
        role = adapter.role_of(info.name)
        r = rows.setdefault(role.label, [0, 0, 0, set()])
        r[0] += 1
        r[1] += _numel(info.shape)
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
        click.option("--bits", type=int, default=None, help="Routed-expert bits (2, 3, 4, 8); picks the family's -wN profile."),
        click.option("--profile", default=None, help="A profile file or shipped profile name (profiles/*.yaml)."),
        click.option("--group-size", type=int, default=None, help="Override every rule's group size (-1 = per-channel)."),
        click.option("--method", type=click.Choice(["rtn", "gptq"]), default=None, help="Override the profile's method."),
        click.option("--revision", default=None, help="Hub revision of MODEL."),
        click.option("--force", is_flag=True, help="Write a plan that a target runtime cannot load (mixed bits in a fused group)."),
    ]
    return _with(opts)(fn)


@main.command()
@_quantize_options
@_handled
def plan(model, bits, profile, group_size, method, revision, force):
    """Show what `quantize` would do: scheme and bytes per role, fallbacks. Writes nothing."""
    from .api import QuantizeOptions, make_plan

    ckpt, p = make_plan(QuantizeOptions(model=model, out=Path("."), bits=bits, profile=profile,
                                        group_size=group_size, method=method, revision=revision, force=force))
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


def _log(message: str) -> None:
    click.echo(message, err=True)


_calibration_options = [
    click.option("--samples", default=None, help="Calibration JSONL file or directory (default: the shipped multimodal set)."),
    click.option("--mode", type=click.Choice(["auto", "routed", "all"]), default="auto", show_default=True,
                 help="Expert coverage: routed tokens only, all tokens of the modality, or routed with "
                      "all-token statistics for experts under --min-tokens."),
    click.option("--min-tokens", type=int, default=64, show_default=True,
                 help="Routed tokens below which an expert counts as under-covered."),
    click.option("--max-tokens", type=int, default=4096, show_default=True, help="Longest sample accepted."),
]


@main.command()
@_quantize_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Variant directory to create.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="A calibration directory from `quantkit calibrate` (else GPTQ calibrates on the fly).")
@click.option("--sequential", is_flag=True,
              help="On-the-fly GPTQ where each layer is calibrated on the quantized layers before it.")
@_with(_calibration_options)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (only once the new variant is complete).")
@click.option("--max-shard-size", default="2GB", show_default=True, help="Largest safetensors shard.")
@_handled
def quantize(model, bits, profile, group_size, method, revision, force, out, calib, sequential, samples, mode,
             min_tokens, max_tokens, overwrite, max_shard_size):
    """Quantize MODEL (directory or Hub id) into a GPTQ-format variant at --out."""
    from .api import QuantizeOptions, quantize as run

    path = run(QuantizeOptions(model=model, out=out, bits=bits, profile=profile, group_size=group_size,
                               method=method, revision=revision, overwrite=overwrite, force=force,
                               max_shard_size=max_shard_size, calib=calib, samples=samples, mode=mode,
                               min_tokens=min_tokens, max_tokens=max_tokens, sequential=sequential), log=_log)
    click.echo(f"variant written: {path}")


@main.command()
@click.argument("model")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Calibration directory to create.")
@_with(_calibration_options)
@click.option("--revision", default=None, help="Hub revision of MODEL.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@_handled
def calibrate(model, out, samples, mode, min_tokens, max_tokens, revision, overwrite):
    """Run MODEL layer by layer over multimodal samples; save per-module statistics for GPTQ."""
    from .api import CalibrateOptions, calibrate as run

    path, _ = run(CalibrateOptions(model=model, out=out, samples=samples, mode=mode, min_tokens=min_tokens,
                                   max_tokens=max_tokens, revision=revision, overwrite=overwrite), log=_log)
    click.echo(f"calibration written: {path}")


@main.command("build-tiny")
@click.argument("kind", type=click.Choice(["vl", "text"]))
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@_handled
def build_tiny(kind, out, seed):
    """Build a tiny ERNIE-4.5 model with the real transformers class (the embedded default)."""
    from .reference import tiny

    if out.exists():
        raise QuantkitError(f"--out {out}: already exists; remove it or choose another path")
    path = tiny.build_tiny_vl(out, seed=seed) if kind == "vl" else tiny.build_tiny_text_moe(out, seed=seed)
    click.echo(f"tiny {kind} model written: {path}")


if __name__ == "__main__":
    main()
