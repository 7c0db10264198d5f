"""Read a checkpoint tensor by tensor, and write one in bounded shards.

A `Checkpoint` is a local directory or a Hub id (resolved through huggingface_hub to a local
snapshot). It never loads the whole model: `read(name)` opens the one shard that holds `name` and
returns that tensor alone. `ShardWriter` writes tensors into shards of at most `max_shard_bytes` plus
`model.safetensors.index.json` (into the run's working directory: quantkit.outdir).
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# safetensors dtype names -> bytes per element
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, e.g. "BF16"
    shape: tuple[int, ...]
    shard: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * _DTYPE_BYTES[self.dtype]


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file, read without touching the tensor data, and checked:
    every entry has a known dtype, a shape of non-negative integers and data offsets that hold exactly
    that many bytes inside the file (else a one-line CheckpointError naming the file and tensor)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or n > 100 * 2**20:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
            data_len = os.fstat(f.fileno()).st_size - 8 - n
    except FileNotFoundError:
        raise CheckpointError(f"{path}: shard listed in the index is missing; re-download the checkpoint")
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-download it")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a readable safetensors file (header is not a JSON object); re-download it")
    header.pop("__metadata__", None)
    for name, meta in header.items():
        _check_entry(path, name, meta)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if end > data_len:
        raise CheckpointError(f"{path}: truncated ({data_len} data bytes, header needs {end}); re-download it")
    return header


def _check_entry(path: Path, name: str, meta) -> None:
    where = f"{path}: tensor {name}"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: header entry is not an object; the file is corrupt")
    dtype, shape, offsets = meta.get("dtype"), meta.get("shape"), meta.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        raise CheckpointError(f"{where}: unknown dtype {dtype!r} (known: {', '.join(_DTYPE_BYTES)})")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: impossible shape {shape!r}; the file is corrupt")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: impossible data offsets {offsets!r}; the file is corrupt")
    if offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[dtype]:
        raise CheckpointError(f"{where}: shape {shape} {dtype} needs {math.prod(shape) * _DTYPE_BYTES[dtype]} bytes, "
                              f"the header gives {offsets[1] - offsets[0]}; the file is corrupt")


class Checkpoint:
    """A sharded safetensors checkpoint plus its config, read lazily one tensor at a time."""

    def __init__(self, path: Path, source: str | None = None, revision: str | None = None):
        self.path = Path(path)
        self.source = source or str(self.path)
        self.revision = revision
        cfg_path = self.path / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{self.path}: no config.json; point at a model directory or Hub id")
        try:
            self.config: dict = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: invalid JSON ({e})")
        self._tensors = self._scan()
        self._finite_checked: set[str] = set()
        self.refuse_non_finite = False  # a source being quantized: NaN/Inf weights are refused on read

    @classmethod
    def open(cls, source: str | os.PathLike, revision: str | None = None) -> "Checkpoint":
        """A local directory, or a Hub id such as `baidu/ERNIE-4.5-VL-28B-A3B-PT`."""
        path = Path(source)
        if path.is_dir():
            return cls(path, source=str(path), revision=revision or _local_revision(path))
        if path.exists():
            raise CheckpointError(f"{source}: is a file; pass the model directory")
        if str(source).count("/") != 1 or str(source).startswith((".", "/")):
            raise CheckpointError(f"{source}: no such directory, and not a Hub id of the form ORG/NAME")
        return cls(*_download(str(source), revision, local=path.absolute()))

    # -- reading ---------------------------------------------------------------------------------
    def _scan(self) -> dict[str, TensorInfo]:
        index = self.path / INDEX_NAME
        if index.is_file():
            try:
                weight_map: dict = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid safetensors index ({e})")
            shards = sorted(set(weight_map.values()))
        elif (self.path / SINGLE_NAME).is_file():
            weight_map, shards = None, [SINGLE_NAME]
        else:
            raise CheckpointError(f"{self.path}: no {INDEX_NAME} or {SINGLE_NAME}; not a safetensors checkpoint")
        tensors: dict[str, TensorInfo] = {}
        for shard in shards:
            for name, meta in read_safetensors_header(self._inside(self.path / shard)).items():
                if name in tensors:
                    raise CheckpointError(f"{self.path}: tensor {name} is stored twice, in {tensors[name].shard} and "
                                          f"{shard}; re-download the checkpoint")
                if weight_map is not None and weight_map.get(name) != shard:
                    raise CheckpointError(f"{index}: maps {name} to {weight_map.get(name)}, but it is stored in "
                                          f"{shard}; re-download the checkpoint or fix the index")
                tensors[name] = TensorInfo(name, meta["dtype"], tuple(meta["shape"]), shard)
        if weight_map is not None:
            missing = sorted(set(weight_map) - set(tensors))
            if missing:
                elsewhere = self._stored_elsewhere(missing[0], shards)
                where = f", but it is stored in {elsewhere}" if elsewhere else ""
                raise CheckpointError(f"{index}: maps {missing[0]} to {weight_map[missing[0]]}{where} ({len(missing)} "
                                      "tensors listed but absent from their shards); re-download the checkpoint or "
                                      "fix the index")
        return tensors

    def _stored_elsewhere(self, name: str, shards: list[str]) -> str | None:
        """The safetensors file of this directory, outside the index's shards, that holds `name`."""
        for p in sorted(self.path.glob("*.safetensors")):
            if p.name not in shards and name in read_safetensors_header(self._inside(p)):
                return p.name
        return None

    def _inside(self, p: Path) -> Path:
        """`p`, if it resolves inside the checkpoint (a Hub cache snapshot: inside its repo's cache
        folder, whose blobs the snapshot links to); never a file a link leads elsewhere."""
        root = self.path.parent.parent if self.path.parent.name == "snapshots" else self.path
        real = p.resolve()
        if not real.is_relative_to(root.resolve()):
            raise CheckpointError(f"{p}: a link to {real}, outside the model directory; quantkit reads no file outside "
                                  "it (copy the file in, or remove the link)")
        return p

    def names(self) -> list[str]:
        return sorted(self._tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {name}")

    def infos(self) -> list[TensorInfo]:
        return [self._tensors[n] for n in self.names()]

    def read(self, name: str) -> torch.Tensor:
        info = self.info(name)
        with safe_open(self.path / info.shard, framework="pt") as f:
            return self._finite(f.get_tensor(name), info)

    def _finite(self, t: torch.Tensor, info: TensorInfo) -> torch.Tensor:
        """Weights holding NaN or Inf make every variant of them garbage: refuse, naming the tensor.
        Each tensor is checked on its first read (~1.5 GB/s for bf16 here: ~40 s for the 28B model)."""
        if self.refuse_non_finite and info.name not in self._finite_checked and t.is_floating_point():
            if not torch.isfinite(t).all():
                raise CheckpointError(f"{self.path / info.shard}: tensor {info.name} holds NaN or Inf; the "
                                      "checkpoint is corrupt (re-download it, or fix the tensor)")
            self._finite_checked.add(info.name)
        return t

    def read_many(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Several tensors, opening each shard once (e.g. all experts of one layer)."""
        by_shard: dict[str, list[str]] = {}
        for n in names:
            by_shard.setdefault(self.info(n).shard, []).append(n)
        out = {}
        for shard, ns in by_shard.items():
            with safe_open(self.path / shard, framework="pt") as f:
                for n in ns:
                    out[n] = self._finite(f.get_tensor(n), self._tensors[n])
        return out

    def side_files(self) -> list[Path]:
        """Everything besides weights that a runtime reads: config flavours, tokenizer, processor,
        chat template, generation config, remote code (*.py), fonts, license."""
        skip = {INDEX_NAME, "quantkit.json"}
        out = []
        for p in sorted(self.path.iterdir()):
            if p.is_file() and not p.name.endswith(".safetensors") and p.name not in skip \
                    and not p.name.startswith("."):
                out.append(self._inside(p))
        return out


def _local_revision(path: Path) -> str | None:
    """The snapshot hash when the directory is a huggingface_hub cache snapshot."""
    return path.name if path.parent.name == "snapshots" else None


def _download(repo_id: str, revision: str | None, local: Path) -> tuple[Path, str, str]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        path = snapshot_download(repo_id, revision=revision)
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such Hub repository (or it is private: set HF_TOKEN)")
    except LocalEntryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such local directory ({local}), not in the local Hub cache, and the "
                              "Hub is unreachable; check the path, or download the model first")
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"{repo_id}: download failed ({e.__class__.__name__}: {str(e).splitlines()[0]})")
    return Path(path), repo_id, Path(path).name


class ShardWriter:
    """Collects tensors into shards of at most `max_shard_bytes`, then writes the index.

    Tensors are flushed to disk as soon as a shard is full, so memory holds at most one shard.
    """

    def __init__(self, directory: Path, max_shard_bytes: int = 2 * 2**30):
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[str, list[str]]] = []  # temp file name, tensor names
        self._pieces: list[tuple[str, list[str]]] = []  # checkpointed pending tensors: file in the state dir, names
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._pending or any(name in names for _, names in self._written):
            raise ValueError(f"tensor {name} written twice")
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        tmp_name = f"shard-{len(self._written):05d}.tmp"
        save_file(self._pending, str(self.directory / tmp_name), metadata={"format": "pt"})
        self._written.append((tmp_name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    # -- checkpoints (quantkit.runstate): finished shards stay where they are; tensors still pending
    # are saved in pieces, each piece once (what was added since the previous checkpoint).
    def state(self, state_dir: Path) -> dict:
        pieces = [pc for pc in self._pieces if set(pc[1]) & set(self._pending)]
        saved = {n for _, names in pieces for n in names}
        new = [n for n in self._pending if n not in saved]
        if new:
            name = f"writer-pending-{len(self._written):05d}-{len(pieces):05d}.safetensors"
            tmp = Path(state_dir) / (name + ".tmp")
            save_file({n: self._pending[n] for n in new}, str(tmp), metadata={"format": "pt"})
            os.replace(tmp, Path(state_dir) / name)
            pieces.append((name, new))
        self._pieces = pieces
        return {"written": self._written, "pending": [[f, names] for f, names in pieces],
                "order": list(self._pending), "total_bytes": self.total_bytes,
                "files": [f for f, _ in pieces]}

    def restore(self, state_dir: Path, state: dict) -> None:
        self._written = [(f, list(names)) for f, names in state["written"]]
        loaded: dict[str, torch.Tensor] = {}
        for f, _ in state["pending"]:
            loaded.update(load_file(str(Path(state_dir) / f)))
        self._pending = {n: loaded[n] for n in state["order"]}
        self._pending_bytes = sum(t.numel() * t.element_size() for t in self._pending.values())
        self._pieces = [(f, list(names)) for f, names in state["pending"]]
        self.total_bytes = state["total_bytes"]
        keep = {f for f, _ in self._written}
        for p in self.directory.glob("shard-*.tmp"):  # shards the killed run wrote after its checkpoint
            if p.name not in keep:
                p.unlink()

    def close(self) -> list[str]:
        """Name the shards `model-0000i-of-0000n.safetensors`, write the index; return shard names."""
        if self._pending or not self._written:
            self._flush()
        n = len(self._written)
        if n == 1:
            os.replace(self.directory / self._written[0][0], self.directory / SINGLE_NAME)
            return [SINGLE_NAME]
        weight_map, names = {}, []
        for i, (tmp_name, tensors) in enumerate(self._written):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.directory / tmp_name, self.directory / final)
            names.append(final)
            weight_map.update({t: final for t in tensors})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        return names


class ConfigCheckpoint:
    """A checkpoint known only by its config and a {name: shape} map in one dtype: enough for
    ``quantkit.plan.build_plan`` (names, shapes, dtypes), e.g. to size the real 28B / 21B from their configs."""

    def __init__(self, config: dict, source: str, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16"):
        self.config, self.source, self.revision = config, source, None
        self._infos = [TensorInfo(n, dtype, tuple(shape), "-") for n, shape in sorted(shapes.items())]
        self._by_name = {i.name: i for i in self._infos}

    def infos(self) -> list[TensorInfo]:
        return list(self._infos)

    def names(self) -> list[str]:
        return [i.name for i in self._infos]

    def info(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise CheckpointError(f"{self.source}: no tensor named {name}")


def shard_files(model_dir: str | Path) -> list[Path]:
    """The weight files of a saved model directory: its index's shards, else model.safetensors."""
    model_dir = Path(model_dir)
    index = model_dir / INDEX_NAME
    if index.is_file():
        return [model_dir / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [model_dir / SINGLE_NAME]


def bytes_by_role(model_dir: str | Path, role_of, packed_part, quantized_params) -> dict:
    """Bytes of a directory's weights by role label, read from the safetensors headers (never a plan),
    for formats that store each quantized module as several tensors.

    `role_of(weight name) -> Role`; `packed_part(tensor name) -> (module, part) | None` (None for a
    plain tensor); `quantized_params({shard path: header}) -> {module: out x in}` (a module's tensors
    may straddle two shards). Returns {"files": {shard: size}, "file_bytes", "header_bytes",
    "tensor_bytes", "params", "by_role": {label: {"tensors", "params", "bytes", "bits_per_param",
    "types"}}}: `file_bytes` = the shards' sizes on disk (= tensor_bytes + header_bytes); a quantized
    module counts as one weight of out x in parameters; `types` lists the dtypes of plain tensors."""
    headers = {path: read_safetensors_header(path) for path in shard_files(model_dir)}
    params = quantized_params(headers)
    files, by_role, counted = {}, {}, set()
    header_total = tensor_total = 0
    for path, header in headers.items():
        size = os.path.getsize(path)
        files[path.name] = size
        data = sum(v["data_offsets"][1] - v["data_offsets"][0] for v in header.values())
        tensor_total += data
        header_total += size - data
        for name, meta in header.items():
            packed = packed_part(name)
            row = by_role.setdefault(role_of(f"{packed[0]}.weight" if packed else name).label,
                                     {"tensors": 0, "params": 0, "bytes": 0, "types": set()})
            row["bytes"] += meta["data_offsets"][1] - meta["data_offsets"][0]
            if packed is None:
                row["tensors"] += 1
                row["params"] += math.prod(meta["shape"])
                row["types"].add(meta["dtype"])
            elif packed[0] not in counted:
                counted.add(packed[0])
                row["tensors"] += 1
                row["params"] += params[packed[0]]
    for row in by_role.values():
        row["bits_per_param"] = round(8 * row["bytes"] / row["params"], 4) if row["params"] else None
        row["types"] = sorted(row["types"])
    return {"files": files, "file_bytes": sum(files.values()), "header_bytes": header_total,
            "tensor_bytes": tensor_total, "params": sum(r["params"] for r in by_role.values()),
            "by_role": dict(sorted(by_role.items()))}
