"""The publishing pipeline: the publishing config (publish/variants.yaml) -> the shell commands that
`make publish` and the CI workflow run (calibrate once, then quantize, profile, package, verify-files
and push each variant), or the CI matrix of variant ids.

    python -m quantkit.publish.plan commands CONFIG --dir DIR [--step all|calibrate|variant]
                                                    [--only ID] [--model DIR] [--push]
    python -m quantkit.publish.plan matrix CONFIG [--only ID]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Callable

import yaml

from ..errors import QuantkitError, UsageError
from .hub_errors import one_line
from .naming import sanitize, source_base_name

_CONFIG_KEYS = {"model", "revision", "base_model", "license", "repo", "branch", "private", "calibration", "variants",
                "profile_command"}
_VARIANT_KEYS = {"id", "profile", "bits", "group_size", "method"}
DEFAULT_PROFILE_COMMAND = "quantkit profile {model} {variant} --out {report}"  # reference, variant


def load_publish_config(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{p}: unreadable publishing config ({one_line(e, 120)})")
    if not isinstance(cfg, dict):
        raise UsageError(f"{p}: a publishing config is a mapping with `model`, `repo` and `variants`")
    unknown = set(cfg) - _CONFIG_KEYS
    if unknown:
        raise UsageError(f"{p}: unknown key {sorted(unknown)[0]!r}; allowed: {', '.join(sorted(_CONFIG_KEYS))}")
    for key in ("model", "repo", "variants"):
        if not cfg.get(key):
            raise UsageError(f"{p}: `{key}` is required")
    ids = []
    for i, v in enumerate(cfg["variants"]):
        if not isinstance(v, dict) or "profile" not in v:
            raise UsageError(f"{p}: variant {i + 1} needs a `profile`")
        bad = set(v) - _VARIANT_KEYS
        if bad:
            raise UsageError(f"{p}: variant {i + 1}: unknown key {sorted(bad)[0]!r}; allowed: "
                             f"{', '.join(sorted(_VARIANT_KEYS))}")
        v.setdefault("id", v["profile"])
        ids.append(v["id"])
    if len(set(ids)) != len(ids):
        raise UsageError(f"{p}: variant ids must be unique ({', '.join(ids)})")
    branch = str(cfg.get("branch") or "main")
    if branch == "main" and len(ids) > 1 and not any(t in cfg["repo"] for t in ("{name}", "{suffix}")):
        raise UsageError(f"{p}: every variant would go to {cfg['repo']}@main; use `repo: ORG/{{name}}` (a repo per "
                         "variant) or `branch: auto` (a branch per variant)")
    cfg["branch"] = branch
    return cfg


def publish_commands(cfg: dict, out_dir: str | os.PathLike, *, step: str = "all", only: str | None = None,
                     model: str | None = None, push: bool = False,
                     has_command: Callable[[str], bool] | None = None) -> list[str]:
    """The shell lines that calibrate once, then quantize, profile, package, verify and push every
    variant of `cfg` (the same lines `make publish` and the CI workflow run). `has_command(name)`
    says whether `quantkit NAME` is available (default: every command is; tests/test_workflow.py
    checks each generated line against the real CLI)."""
    if step not in ("all", "calibrate", "variant"):
        raise UsageError(f"--step {step}: choose all, calibrate or variant")
    if push and model:
        raise UsageError("a rehearsal on another --model pushes nothing: drop PUSH=1 (the config's repo is for "
                         f"{cfg['model']})")
    has_command = has_command or (lambda name: True)
    variants = [v for v in cfg["variants"] if not only or v["id"] == only]
    if only and not variants:
        raise UsageError(f"--only {only}: no such variant id; ids: {', '.join(v['id'] for v in cfg['variants'])}")
    q = shlex.quote
    out = Path(out_dir)
    src = model or cfg["model"]
    rev = f" --revision {q(cfg['revision'])}" if cfg.get("revision") and not model else ""
    base = None if model else (cfg.get("base_model") or (cfg["model"] if _looks_hub_id(cfg["model"]) else None))
    lines = ["set -e"]
    if _looks_hub_id(src) or push:
        lines.append("export HF_HUB_OFFLINE=0  # the base model is read from the Hub, or the push needs it")
    needs_calib = any(v.get("method") != "rtn" for v in variants)
    out = out / sanitize(source_base_name(src))  # one tree per base model: a rehearsal never touches the real build
    calib = out / "calib"
    cal = cfg.get("calibration") or {}
    cal_args = "".join(f" --{k.replace('_', '-')} {q(str(cal[k]))}" for k in ("samples", "mode", "min_tokens")
                       if cal.get(k) is not None)
    calibrate = f"test -d {q(str(calib))} || quantkit calibrate {q(src)}{rev} --out {q(str(calib))}{cal_args}"
    if step in ("all", "calibrate") and needs_calib:
        lines.append(calibrate)
    if step == "calibrate":
        return lines
    if step == "variant" and needs_calib:
        lines.append(calibrate)  # a no-op when the calibrate job left it; calibrates on a fresh runner
    for v in variants:
        vdir, rdir = out / "variants" / v["id"], out / "reports" / v["id"]
        qargs = f" --profile {q(v['profile'])}" + "".join(
            f" --{k.replace('_', '-')} {q(str(v[k]))}" for k in ("bits", "group_size", "method") if v.get(k) is not None)
        if v.get("method") != "rtn":
            qargs += f" --calib {q(str(calib))}"
        lines.append(f"# variant {v['id']}")
        lines.append(f"quantkit quantize {q(src)}{rev}{qargs} --out {q(str(vdir))} --overwrite")
        report = ""
        prof = cfg.get("profile_command", DEFAULT_PROFILE_COMMAND)
        if prof and has_command("profile"):
            lines.append(f"rm -rf {q(str(rdir))}")
            lines.append(prof.format(variant=q(str(vdir)), report=q(str(rdir)), model=q(src)))
            report = f" --report {q(str(rdir))}"
        elif prof:
            lines.append("# `quantkit profile` is not available: the card says no tradeoff was measured")
        pkg = f"quantkit package {q(str(vdir))}{report}"
        if not model:  # a rehearsal's card names no repo: it is not published there
            pkg += f" --repo {q(cfg['repo'])} --revision {q(cfg['branch'])}"
        if base:
            pkg += f" --base-model {q(base)}"
        if cfg.get("license") and not model:
            pkg += f" --license {q(cfg['license'])}"
        lines.append(pkg)
        lines.append(f"quantkit verify-files {q(str(vdir))}")
        lines.append(f"quantkit push {q(str(vdir))} --repo {q(cfg['repo'])} --revision {q(cfg['branch'])}"
                     + (" --private" if cfg.get("private") else "") + ("" if push else " --dry-run"))
    return lines


def publish_matrix(cfg: dict, only: str | None = None) -> dict:
    ids = [v["id"] for v in cfg["variants"] if not only or v["id"] == only]
    if not ids:
        raise UsageError(f"--only {only}: no such variant id")
    return {"variant": ids}


def _looks_hub_id(s: str) -> bool:
    return str(s).count("/") == 1 and not str(s).startswith((".", "/")) and not Path(s).exists()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quantkit.publish.plan", description="Plan the publishing pipeline.")
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("commands", help="print the shell commands of `make publish`")
    c.add_argument("config")
    c.add_argument("--dir", required=True, help="working directory (calibration, variants, reports)")
    c.add_argument("--step", default="all", choices=["all", "calibrate", "variant"])
    c.add_argument("--only", default=None, help="one variant id")
    c.add_argument("--model", default=None, help="rehearse on another checkpoint (its push stays a dry run)")
    c.add_argument("--push", action="store_true", help="really push (default: --dry-run)")
    m = sub.add_parser("matrix", help="print the CI matrix as JSON")
    m.add_argument("config")
    m.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    try:
        cfg = load_publish_config(args.config)
        if args.what == "matrix":
            print(json.dumps(publish_matrix(cfg, args.only or None)))
        else:
            print("\n".join(publish_commands(cfg, args.dir, step=args.step, only=args.only or None,
                                             model=args.model or None, push=args.push)))
    except QuantkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["DEFAULT_PROFILE_COMMAND", "load_publish_config", "main", "publish_commands", "publish_matrix"]
