"""`quantkit verify` integrity checks of a compressed-tensors variant: the files are the manifest's,
every module's tensors agree with its config group and the plan, kept tensors are the source's bytes,
and compressed-tensors' own model-free decompressor (`CompressedTensorsDequantizer`, the reader its
`convert` entry point uses) turns every quantized module into exactly the weight quantkit reads."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ...checkpoint import Checkpoint
from ...errors import CheckpointError, VariantCorrupt
from ...manifest import MANIFEST, read_manifest, verify_files
from ...scheme import parse_scheme_label
from ...verdicts import Check, failed, from_offenders, skipped
from .config import PACK_FORMAT
from .packing import packed_shapes, part_dtype
from .reader import CTCodes

SRC_CT = "compressed-tensors 0.20 compressors/pack_quantized (PackedQuantizationCompressor.decompress), " \
         "entrypoints/convert/converters/ct_dequantizer.py (CompressedTensorsDequantizer)"


class CTVariant:
    """A compressed-tensors variant as stored: manifest, config, codes (None when unreadable, with the
    reason in `problem`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VariantCorrupt(f"{path}: not a directory; pass a variant directory written by quantkit quantize")
        self.manifest = read_manifest(self.path)
        if "tensors" not in self.manifest:
            raise VariantCorrupt(f"{self.path / MANIFEST}: has no `tensors` table; not a quantkit variant manifest")
        try:
            self.config = json.loads((self.path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise VariantCorrupt(f"{self.path / 'config.json'}: unreadable ({e})")
        self.problem = ""
        self.codes: CTCodes | None = None
        try:
            self.codes = CTCodes(self.path)
        except (CheckpointError, VariantCorrupt) as e:
            self.problem = str(e)

    @property
    def plan(self) -> dict[str, dict]:
        return self.manifest["tensors"]


def check_checksums(v: CTVariant) -> Check:
    return from_offenders("integrity.checksums", [str(p) for p in verify_files(v.path).problems],
                          "files must match the sha256 and size in quantkit.json")


def check_readable(v: CTVariant) -> Check:
    """Shards and index readable, quantization_config parsed by compressed-tensors, every group the
    pack-quantized integer weight scheme this format writes."""
    if v.codes is None:
        return failed("integrity.readable", [v.problem], v.problem)
    bad = []
    cfg = v.codes.config
    if cfg.format != PACK_FORMAT:
        bad.append(f"quantization_config.format {cfg.format!r}, not {PACK_FORMAT!r}")
    for name, g in cfg.config_groups.items():
        w = g.weights
        if w is None or w.type != "int" or g.input_activations is not None or (g.format or cfg.format) != PACK_FORMAT:
            bad.append(f"config group {name}: not an integer weight-only pack-quantized scheme")
    return from_offenders("integrity.readable", bad, "compressed-tensors must read the config as this format writes it",
                          SRC_CT)


def check_modules(v: CTVariant, source_shapes: dict | None) -> Check:
    """Every packed module: the parts its scheme needs (zero point iff asymmetric, no g_idx), their
    dtypes and shapes for the weight_shape it records, the plan's scheme, the source's shape."""
    if v.codes is None:
        return skipped("integrity.modules", "the variant cannot be read (see integrity.readable)")
    bad = []
    c = v.codes
    for m in c.modules:
        try:
            group, s = c.group(m)
            out_f, in_f = c.weight_shape(m)
        except (VariantCorrupt, CheckpointError, ValueError) as e:
            bad.append(str(e))
            continue
        g = s.effective_group_size(in_f)
        if in_f % g:
            bad.append(f"{m}: group {g} ({group}) does not divide in_features {in_f}")
            continue
        want = packed_shapes(out_f, in_f, s.bits, in_f // g, s.sym)
        have = set(c.parts[m])
        if have != set(want):
            bad.append(f"{m}: stores {sorted(have)}, {group} ({s.bits}-bit {'sym' if s.sym else 'asym'}) needs "
                       f"{sorted(want)}")
        for p in have & set(want):
            info = c.ckpt.info(f"{m}.{p}")
            if info.dtype != part_dtype(p) or tuple(info.shape) != want[p]:
                bad.append(f"{m}.{p}: {info.dtype} {list(info.shape)}, expected {part_dtype(p)} {list(want[p])}")
        planned = parse_scheme_label((v.plan.get(f"{m}.weight") or {}).get("scheme"))
        if planned is not None and (planned.bits, planned.effective_group_size(in_f), planned.sym) != (s.bits, g, s.sym):
            bad.append(f"{m}: config {group} reads {s.bits}-bit group {g} {'sym' if s.sym else 'asym'}, the manifest "
                       f"plans {planned.label}")
        src = (source_shapes or {}).get(f"{m}.weight")
        if src is not None and tuple(src) != (out_f, in_f):
            bad.append(f"{m}: weight_shape [{out_f}, {in_f}], the source weight is {list(src)}")
    return from_offenders("integrity.modules", bad, "each module's tensors must agree with its config group, the "
                          "plan and the source", SRC_CT)


def check_scales(v: CTVariant) -> Check:
    if v.codes is None:
        return skipped("integrity.finite_scales", "the variant cannot be read (see integrity.readable)")
    bad = []
    for m in v.codes.modules:
        s = v.codes.ckpt.read(f"{m}.weight_scale")
        n = int((~torch.isfinite(s) | (s <= 0)).sum())
        if n:
            bad.append(f"{m}.weight_scale: {n} non-finite or non-positive scale(s)")
    return from_offenders("integrity.finite_scales", bad, "scales must be finite and positive")


def check_plan_coverage(v: CTVariant) -> Check:
    if v.codes is None:
        return skipped("integrity.plan_coverage", "the variant cannot be read (see integrity.readable)")
    bad = []
    packed = set(v.codes.modules)
    kept = set(v.codes.kept)
    for name, entry in sorted(v.plan.items()):
        module = name.rpartition(".")[0]
        if entry.get("scheme") == "keep":
            if name not in kept:
                bad.append(f"{name}: the plan keeps it, but it is " +
                           ("stored quantized" if module in packed else "not stored"))
        elif module not in packed:
            bad.append(f"{name}: the plan quantizes it ({entry.get('scheme')}), but {module}.weight_packed is not stored")
    planned_modules = {n.rpartition(".")[0] for n, e in v.plan.items() if e.get("scheme") != "keep"}
    bad += [f"{m}: stored quantized but not in the plan" for m in sorted(packed - planned_modules)]
    bad += [f"{n}: stored but not in the plan" for n in sorted(kept - set(v.plan))]
    return from_offenders("integrity.plan_coverage", bad,
                          "what is stored must be what the plan in quantkit.json says, under the source's names")


def check_kept_identical(v: CTVariant, source: str | Path | None) -> tuple[Check, dict | None]:
    cid = "integrity.kept_identical"
    ident = str(source) if source is not None else (v.manifest.get("source") or {}).get("id")
    if not ident:
        return skipped(cid, f"{MANIFEST} names no source; pass --source DIR", optional=True), None
    try:
        src = Checkpoint.open(ident, (v.manifest.get("source") or {}).get("revision") if source is None else None)
    except CheckpointError as e:
        return skipped(cid, f"source {ident} cannot be opened ({e}); pass --source DIR", optional=True), None
    shapes = {i.name: i.shape for i in src.infos()}
    if v.codes is None:
        return skipped(cid, "the variant cannot be read (see integrity.readable)"), shapes
    bad = []
    for name in v.codes.kept:
        if (v.plan.get(name) or {}).get("scheme") != "keep":
            continue
        if name not in shapes:
            bad.append(f"{name}: not in the source")
            continue
        ours, theirs = v.codes.ckpt.info(name), src.info(name)
        if (ours.dtype, ours.shape) != (theirs.dtype, theirs.shape):
            bad.append(f"{name}: {ours.dtype} {list(ours.shape)}, the source has {theirs.dtype} {list(theirs.shape)}")
        elif not torch.equal(v.codes.ckpt.read(name).view(-1).view(torch.uint8), src.read(name).view(-1).view(torch.uint8)):
            bad.append(f"{name}: bytes differ from the source")
    return from_offenders(cid, bad, "kept tensors must be bit-identical to the source"), shapes


def check_decompressor(v: CTVariant) -> Check:
    """compressed-tensors' own reader, as a user runs it (`CompressedTensorsDequantizer(DIR)`, its
    config parsing, target/ignore matching and `PackedQuantizationCompressor.decompress`), one module at
    a time: every quantized module must come out as exactly quantkit's dequantized weight, in fp32."""
    cid = "integrity.ct_decompressor"
    if v.codes is None:
        return skipped(cid, "the variant cannot be read (see integrity.readable)")
    from compressed_tensors.entrypoints.convert.converters.ct_dequantizer import CompressedTensorsDequantizer

    try:
        reader = CompressedTensorsDequantizer(v.path, dtype=torch.float32)
    except (ValueError, OSError) as e:
        return failed(cid, [f"{e.__class__.__name__}: {e}"], "compressed-tensors cannot open the variant", SRC_CT)
    bad = []
    for m in v.codes.modules:
        try:
            ours = v.codes.read(m).dequantize()
            theirs = reader.process({f"{m}.{p}": t for p, t in v.codes.tensors(m).items()}).get(f"{m}.weight")
        except (VariantCorrupt, ValueError, KeyError, RuntimeError) as e:
            bad.append(f"{m}: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if theirs is None:
            bad.append(f"{m}: compressed-tensors leaves it compressed (no config group targets it for its reader)")
        elif theirs.shape != ours.shape or not torch.equal(theirs, ours):
            diff = (theirs - ours).abs().max().item() if theirs.shape == ours.shape else f"shape {list(theirs.shape)}"
            bad.append(f"{m}: compressed-tensors decompresses another weight (max |diff| {diff})")
    return from_offenders(cid, bad, "compressed-tensors' decompressor must reproduce every quantized weight exactly",
                          SRC_CT)


def run_integrity(v: CTVariant, source: str | Path | None) -> list[Check]:
    kept, shapes = check_kept_identical(v, source)
    readable = check_readable(v)
    checks = [check_checksums(v), readable, check_modules(v, shapes), check_scales(v), check_plan_coverage(v), kept]
    checks.append(check_decompressor(v) if readable.passed else
                  skipped("integrity.ct_decompressor", "the config cannot be read (see integrity.readable)"))
    return checks


__all__ = ["CTVariant", "run_integrity"]
