"""The public, typed entry points. The CLI, the Makefile jobs and the tests all call these."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .adapters import Adapter, adapter_for
from .checkpoint import Checkpoint
from .errors import QuantkitError
from .plan import Plan, build_plan
from .profiles import Profile, load_profile, profile_for_bits
from .quantize.gptq_format import pack
from .quantize.rtn import quantize_rtn
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


def resolve_profile(adapter: Adapter, *, bits: int | None, profile: str | None,
                    group_size: int | None = None, method: str | None = None) -> Profile:
    if profile is not None:
        prof = load_profile(profile)
        if bits is not None:
            prof = prof.with_overrides(expert_bits=_checked_bits(bits))
    elif bits is not None:
        prof = profile_for_bits(adapter.default_profile, bits)
    else:
        prof = profile_for_bits(adapter.default_profile, 4)
    if group_size is not None and group_size != -1 and group_size <= 0:
        raise QuantkitError(f"--group-size {group_size}: must be a positive number of columns or -1 (per-channel)")
    return prof.with_overrides(group_size=group_size, method=method)


def _checked_bits(bits: int) -> int:
    from .quantize.scheme import SUPPORTED_BITS
    if bits not in SUPPORTED_BITS:
        raise QuantkitError(f"--bits {bits}: supported bit widths are {', '.join(map(str, SUPPORTED_BITS))}")
    return bits


def make_plan(opts: QuantizeOptions) -> tuple[Checkpoint, Plan]:
    ckpt, adapter = open_model(opts.model, opts.revision)
    prof = resolve_profile(adapter, bits=opts.bits, profile=opts.profile, group_size=opts.group_size,
                           method=opts.method)
    return ckpt, build_plan(ckpt, adapter, prof, force=opts.force)


def quantize(opts: QuantizeOptions) -> Path:
    ckpt, plan = make_plan(opts)
    out = Path(opts.out).resolve()
    if out == ckpt.path.resolve() or ckpt.path.resolve() in out.parents:
        raise QuantkitError(f"--out {opts.out}: inside the source checkpoint; the source is never modified")
    methods = {e.scheme.method for e in plan.quantized()}
    if "gptq" in methods:
        raise QuantkitError(f"profile {plan.profile.name} asks for GPTQ, which needs calibration data; "
                            "pass --method rtn (GPTQ calibration is not available in this version yet)")
    return write_variant(ckpt, plan, rtn_tensors(ckpt, plan), out, overwrite=opts.overwrite,
                         max_shard_bytes=parse_size(opts.max_shard_size), extra={"method": sorted(methods)})


def rtn_tensors(ckpt: Checkpoint, plan: Plan) -> Iterator[dict[str, torch.Tensor]]:
    """Round-to-nearest, one tensor in memory at a time."""
    for e in plan.entries:
        t = ckpt.read(e.name)
        if not e.quantized:
            yield {e.name: t}
            continue
        qw = quantize_rtn(t.float(), e.scheme.bits, e.scheme.group_size, e.scheme.sym)
        yield {f"{e.module}.{k}": v for k, v in pack(qw).items()}
