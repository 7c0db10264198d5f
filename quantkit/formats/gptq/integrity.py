"""File integrity of a variant: what is on disk is what `quantkit.json` and the plan say.

Checks (each returns a `Check`, see report.py):
  integrity.checksums       every file listed in quantkit.json exists with its size and sha256; no
                            unlisted files
  integrity.index           the index is readable, every shard it names exists and is readable, every
                            tensor it names is in its shard, and no shard holds tensors it does not name
  integrity.packed_shapes   qweight/qzeros/scales/g_idx of every quantized module: all four present,
                            int32/int32/fp16/int32, shapes consistent with one bit width, one group size
                            and the module's [out, in] (the source's weight shape when the source is at
                            hand), with the scheme the manifest records, and g_idx in range (i // g
                            without act-order)
  integrity.finite_scales   no NaN or infinite scale
  integrity.plan_coverage   every tensor the plan quantizes is stored quantized (no float .weight left),
                            every kept tensor is stored as is, and nothing outside the plan is stored
  integrity.kept_identical  every kept tensor is bit-identical (dtype, shape, bytes) to the source's;
                            the source is manifest["source"]["id"] or an explicit `source`; when it
                            cannot be opened the check is reported as skipped, never as passed

The tensor table is read from the safetensors headers directly (not through `Checkpoint`), so a
missing or truncated shard is reported as a finding instead of stopping the run.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ...checkpoint import INDEX_NAME, SINGLE_NAME, Checkpoint
from ...errors import CheckpointError, VariantCorrupt
from ...manifest import MANIFEST, read_manifest, verify_files
from ...scheme import QuantScheme, parse_scheme_label
from ...verdicts import Check, failed, from_offenders, skipped

PACKED_PARTS = ("qweight", "qzeros", "scales", "g_idx")
_PART_DTYPES = {"qweight": "I32", "qzeros": "I32", "scales": "F16", "g_idx": "I32"}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


@dataclass(frozen=True)
class TensorRef:
    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offsets in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass
class PackedModule:
    """One quantized module as stored: its four tensors and what their shapes say."""
    module: str
    parts: dict[str, TensorRef]
    problems: list[str]
    in_features: int | None = None
    out_features: int | None = None
    bits: int | None = None
    n_groups: int | None = None

    @property
    def group_size(self) -> int | None:
        if self.in_features and self.n_groups and self.in_features % self.n_groups == 0:
            return self.in_features // self.n_groups
        return None


def _read_header(path: Path) -> tuple[dict, int]:
    """(header without __metadata__, byte offset where the data starts). Raises ValueError/OSError."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > 100 * 2**20:
            raise ValueError("bad header length")
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if 8 + n + end > size:
        raise ValueError(f"truncated: {size - 8 - n} data bytes, header needs {end}")
    return header, 8 + n


def scan_tensors(directory: Path) -> tuple[dict[str, TensorRef], list[str], dict | None]:
    """Every readable tensor of a safetensors checkpoint directory, the problems found on the way
    (missing/unreadable shards, tensors the index names but no shard holds, unindexed tensors), and
    the index's weight map (None for a single-file checkpoint)."""
    directory = Path(directory)
    problems: list[str] = []
    index_path = directory / INDEX_NAME
    weight_map = None
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
            if not isinstance(weight_map, dict):
                raise TypeError("weight_map is not a mapping")
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            return {}, [f"{INDEX_NAME}: not a valid safetensors index ({e})"], None
        shards = sorted(set(weight_map.values()))
    elif (directory / SINGLE_NAME).is_file():
        shards = [SINGLE_NAME]
    else:
        return {}, [f"no {INDEX_NAME} or {SINGLE_NAME}"], None
    tensors: dict[str, TensorRef] = {}
    for shard in shards:
        path = directory / shard
        if not path.is_file():
            problems.append(f"shard {shard} listed in the index is missing")
            continue
        try:
            header, base = _read_header(path)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            problems.append(f"shard {shard} is not a readable safetensors file ({e})")
            continue
        for name, meta in header.items():
            start, end = meta["data_offsets"]
            tensors[name] = TensorRef(name, meta["dtype"], tuple(meta["shape"]), path, base + start, base + end)
            if weight_map is not None and weight_map.get(name) != shard:
                problems.append(f"tensor {name} is in {shard} but the index does not name it there")
    if weight_map is not None:
        listed_shards = set(shards)
        for name, shard in sorted(weight_map.items()):
            if name not in tensors and (directory / shard).is_file() and not any(
                    p.startswith(f"shard {shard} ") for p in problems):
                problems.append(f"tensor {name} named by the index is not in {shard}")
        for p in sorted(directory.glob("*.safetensors")):
            if p.name not in listed_shards:
                problems.append(f"shard {p.name} is not named by the index")
    return tensors, problems, weight_map


class VariantFiles:
    """A variant directory as stored: manifest, config, tensor table. Reads tensors lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise VariantCorrupt(f"{path}: not a directory; pass a variant directory written by quantkit quantize")
        self.manifest = read_manifest(self.path)
        if not isinstance(self.manifest, dict) or "tensors" not in self.manifest:
            raise VariantCorrupt(f"{self.path / MANIFEST}: has no `tensors` table; not a quantkit variant manifest")
        cfg = self.path / "config.json"
        try:
            self.config: dict = json.loads(cfg.read_text())
        except FileNotFoundError:
            raise VariantCorrupt(f"{cfg}: missing; not a complete variant")
        except json.JSONDecodeError as e:
            raise VariantCorrupt(f"{cfg}: invalid JSON ({e})")
        self.qcfg: dict | None = self.config.get("quantization_config")
        self.tensors, self.index_problems, self.weight_map = scan_tensors(self.path)
        self._packed: dict[str, PackedModule] | None = None

    # -- reading -----------------------------------------------------------------------------------
    def read(self, name: str) -> torch.Tensor:
        ref = self.tensors[name]
        with safe_open(ref.file, framework="pt") as f:
            return f.get_tensor(name)

    def read_np(self, name: str) -> np.ndarray:
        """A tensor as numpy, straight from the file bytes (little-endian; no BF16)."""
        ref = self.tensors[name]
        with open(ref.file, "rb") as f:
            f.seek(ref.start)
            buf = f.read(ref.nbytes)
        return np.frombuffer(buf, dtype=np.dtype(_NP_DTYPES[ref.dtype]).newbyteorder("<")).reshape(ref.shape)

    @property
    def plan(self) -> dict[str, dict]:
        return self.manifest["tensors"]

    def planned_scheme(self, module: str) -> QuantScheme | None:
        entry = self.plan.get(f"{module}.weight")
        return parse_scheme_label(entry.get("scheme", "")) if entry else None

    def packed_modules(self) -> dict[str, PackedModule]:
        """Every module with at least one of qweight/qzeros/scales/g_idx, with what its shapes say."""
        if self._packed is None:
            groups: dict[str, dict[str, TensorRef]] = {}
            for name, ref in self.tensors.items():
                module, _, part = name.rpartition(".")
                if part in PACKED_PARTS:
                    groups.setdefault(module, {})[part] = ref
            self._packed = {m: _describe(m, parts) for m, parts in sorted(groups.items())}
        return self._packed

    def plain_names(self) -> list[str]:
        packed = {f"{m}.{p}" for m, pm in self.packed_modules().items() for p in pm.parts}
        return sorted(n for n in self.tensors if n not in packed)


def _describe(module: str, parts: dict[str, TensorRef]) -> PackedModule:
    pm = PackedModule(module, parts, [])
    missing = [p for p in PACKED_PARTS if p not in parts]
    if missing:
        pm.problems.append(f"{module}: {', '.join(missing)} missing")
    for p, ref in parts.items():
        if ref.dtype != _PART_DTYPES[p]:
            pm.problems.append(f"{module}.{p}: dtype {ref.dtype}, the GPTQ format stores {_PART_DTYPES[p]}")
    qw, qz, scales, g_idx = (parts.get(p) for p in PACKED_PARTS)
    if g_idx is not None and len(g_idx.shape) == 1:
        pm.in_features = g_idx.shape[0]
    if qw is not None and len(qw.shape) == 2:
        pm.out_features = qw.shape[1]
        if pm.in_features:
            bits = qw.shape[0] * 32 / pm.in_features
            if bits in (2, 3, 4, 8):
                pm.bits = int(bits)
            else:
                pm.problems.append(f"{module}.qweight {list(qw.shape)} with g_idx [{pm.in_features}] means "
                                   f"{bits:g} bits; GPTQ packs 2, 3, 4 or 8")
    if scales is not None and len(scales.shape) == 2:
        pm.n_groups = scales.shape[0]
        if pm.out_features is not None and scales.shape[1] != pm.out_features:
            pm.problems.append(f"{module}.scales {list(scales.shape)}: {scales.shape[1]} columns, qweight has "
                               f"{pm.out_features}")
        if pm.in_features and (pm.n_groups == 0 or pm.in_features % pm.n_groups):
            pm.problems.append(f"{module}.scales: {pm.n_groups} groups do not divide in_features {pm.in_features}")
    if qz is not None and pm.bits and pm.n_groups is not None and pm.out_features is not None:
        expect = (pm.n_groups, pm.out_features * pm.bits // 32)
        if qz.shape != expect or (pm.out_features * pm.bits) % 32:
            pm.problems.append(f"{module}.qzeros {list(qz.shape)}: expected {list(expect)} for {pm.bits} bits, "
                               f"{pm.n_groups} groups and {pm.out_features} outputs")
    return pm


# -- checks ---------------------------------------------------------------------------------------
def check_checksums(v: VariantFiles) -> Check:
    """Every file matches quantkit.json and none is unlisted, by the one rule of manifest.verify_files."""
    files = v.manifest.get("files")
    if not isinstance(files, dict) or not files:
        return failed("integrity.checksums", [f"{MANIFEST} has no `files` table"],
                      f"{MANIFEST} records no file checksums")
    problems = [str(p) for p in verify_files(v.path).problems]
    return from_offenders("integrity.checksums", problems, "files must match the sha256 and size in quantkit.json")


def check_index(v: VariantFiles) -> Check:
    return from_offenders("integrity.index", v.index_problems,
                          "every shard and tensor the index names must exist and be readable")


def check_packed_shapes(v: VariantFiles, source_shapes: dict[str, tuple] | None = None) -> Check:
    bad: list[str] = []
    for module, pm in v.packed_modules().items():
        bad += pm.problems
        if pm.problems or not pm.bits:
            continue
        planned = v.planned_scheme(module)
        if planned is not None:
            g = planned.effective_group_size(pm.in_features)
            if planned.bits != pm.bits or pm.group_size != g:
                bad.append(f"{module}: stored as {pm.bits}-bit group {pm.group_size}, the manifest plans "
                           f"{planned.bits}-bit group {g}")
        src = (source_shapes or {}).get(f"{module}.weight")
        if src is not None and tuple(src) != (pm.out_features, pm.in_features):
            bad.append(f"{module}: packed for [{pm.out_features}, {pm.in_features}], the source weight is {list(src)}")
        g_idx = v.read_np(f"{module}.g_idx").astype(np.int64)
        if g_idx.min(initial=0) < 0 or g_idx.max(initial=0) >= pm.n_groups:
            bad.append(f"{module}.g_idx: values outside [0, {pm.n_groups})")
        elif not (planned and planned.desc_act) and pm.group_size and not np.array_equal(
                g_idx, np.arange(pm.in_features) // pm.group_size):
            bad.append(f"{module}.g_idx: not i // {pm.group_size} although the plan has no act-order")
    return from_offenders("integrity.packed_shapes", bad,
                          "qweight/qzeros/scales/g_idx must agree with one bit width, group size and module shape")


def check_finite_scales(v: VariantFiles) -> Check:
    bad = []
    for module, pm in v.packed_modules().items():
        ref = pm.parts.get("scales")
        if ref is None or ref.dtype not in _NP_DTYPES:
            continue
        s = v.read_np(ref.name).astype(np.float32)
        n = int((~np.isfinite(s)).sum())
        if n:
            bad.append(f"{ref.name}: {n} non-finite scale(s)")
    return from_offenders("integrity.finite_scales", bad, "scales must be finite")


def check_plan_coverage(v: VariantFiles) -> Check:
    bad = []
    packed = v.packed_modules()
    planned_modules = set()
    for name, entry in sorted(v.plan.items()):
        label = entry.get("scheme", "")
        if label == "keep":
            ref = v.tensors.get(name)
            module = name.rsplit(".", 1)[0]
            if ref is None and module in packed:
                bad.append(f"{name}: the plan keeps it, but it is stored quantized ({module}.qweight)")
            elif ref is None and not any(p.startswith("shard ") for p in v.index_problems):
                bad.append(f"{name}: planned (keep) but not stored")
        else:
            module = name[: -len(".weight")] if name.endswith(".weight") else name
            planned_modules.add(module)
            if name in v.tensors:
                bad.append(f"{name}: the plan quantizes it ({label}), but it is stored as {v.tensors[name].dtype}")
            elif module not in packed and not any(p.startswith("shard ") for p in v.index_problems):
                bad.append(f"{name}: the plan quantizes it ({label}), but {module}.qweight is not stored")
    for module in packed:
        if module not in planned_modules and f"{module}.weight" not in v.plan:
            bad.append(f"{module}: stored quantized but not in the plan (renamed or extra module)")
    for name in v.plain_names():
        if name not in v.plan:
            bad.append(f"{name}: stored but not in the plan (renamed or extra tensor)")
    return from_offenders("integrity.plan_coverage", bad,
                          "what is stored must be what the plan in quantkit.json says, under the source's names")


def open_source(v: VariantFiles, source: str | Path | None) -> tuple[Path | None, str]:
    """The local directory of the source checkpoint, or None and the reason it cannot be opened."""
    ident = str(source) if source is not None else (v.manifest.get("source") or {}).get("id")
    if not ident:
        return None, f"{MANIFEST} names no source; pass --source DIR"
    try:
        return Checkpoint.open(ident, (v.manifest.get("source") or {}).get("revision") if source is None
                               else None).path, ident
    except CheckpointError as e:
        return None, f"source {ident} cannot be opened ({e}); pass --source DIR"


def _same_bytes(a: TensorRef, b: TensorRef, chunk: int = 64 * 2**20) -> bool:
    if a.nbytes != b.nbytes:
        return False
    with open(a.file, "rb") as fa, open(b.file, "rb") as fb:
        fa.seek(a.start)
        fb.seek(b.start)
        left = a.nbytes
        while left:
            n = min(chunk, left)
            if fa.read(n) != fb.read(n):
                return False
            left -= n
    return True


def check_kept_identical(v: VariantFiles, source_tensors: dict[str, TensorRef] | None, why_not: str) -> Check:
    cid = "integrity.kept_identical"
    if source_tensors is None:
        return skipped(cid, why_not, optional=True)
    bad = []
    for name, entry in sorted(v.plan.items()):
        if entry.get("scheme") != "keep" or name not in v.tensors:
            continue
        ours, theirs = v.tensors[name], source_tensors.get(name)
        if theirs is None:
            bad.append(f"{name}: not in the source")
        elif (ours.dtype, ours.shape) != (theirs.dtype, theirs.shape):
            bad.append(f"{name}: {ours.dtype} {list(ours.shape)}, the source has {theirs.dtype} {list(theirs.shape)}")
        elif not _same_bytes(ours, theirs):
            bad.append(f"{name}: bytes differ from the source")
    return from_offenders(cid, bad, "kept tensors must be bit-identical to the source")


def run_integrity(v: VariantFiles, source: str | Path | None = None) -> tuple[list[Check], dict | None]:
    """All integrity checks; also returns the source's tensor table (None when it cannot be opened)."""
    src_dir, ident = open_source(v, source)
    source_tensors = None
    why_not = ident
    if src_dir is not None:
        source_tensors, problems, _ = scan_tensors(src_dir)
        if problems:
            source_tensors, why_not = None, f"source {ident} is incomplete ({problems[0]})"
    shapes = {n: r.shape for n, r in source_tensors.items()} if source_tensors else None
    checks = [check_checksums(v), check_index(v), check_packed_shapes(v, shapes), check_finite_scales(v),
              check_plan_coverage(v), check_kept_identical(v, source_tensors, why_not)]
    return checks, source_tensors
