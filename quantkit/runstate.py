"""A run's checkpoints, so a killed quantize or calibrate continues where it stopped (`--resume`).

After each finished unit of work (a decoder layer; a layer's tensors for RTN) the producer calls
`RunProgress.save(step, record, tensors)`: the output writer's own state (`writer_state`, e.g. the
ShardWriter's finished shards and pending tensors), the producer's record (fallbacks, solver
figures, ...) and its tensors (e.g. the hidden states entering the next layer) are written to the
run's state directory (quantkit.outdir) as safetensors + JSON, each file atomically, `progress.json`
last: a kill at any instant leaves the previous complete checkpoint or the new one. Nothing is
pickled; nested tuples/dicts of tensors are flattened to named tensors plus a JSON skeleton.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

PROGRESS = "progress.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def flatten(tree: Any, prefix: str = "t") -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON skeleton, {name: tensor}) of nested lists/tuples/dicts of tensors and plain values."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            tensors[path] = x.contiguous()
            return {"__tensor__": path}
        if isinstance(x, (list, tuple)):
            return {"__seq__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)], "tuple": isinstance(x, tuple)}
        if isinstance(x, dict):
            return {"__map__": {str(k): walk(v, f"{path}.{k}") for k, v in x.items()}}
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"__value__": x}
        raise TypeError(f"cannot checkpoint a {type(x).__name__}")

    return walk(tree, prefix), tensors


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if "__tensor__" in skeleton:
        return tensors[skeleton["__tensor__"]]
    if "__seq__" in skeleton:
        items = [unflatten(v, tensors) for v in skeleton["__seq__"]]
        return tuple(items) if skeleton.get("tuple") else items
    if "__map__" in skeleton:
        return {k: unflatten(v, tensors) for k, v in skeleton["__map__"].items()}
    return skeleton["__value__"]


class RunProgress:
    """The checkpoints of one run. `state_dir=None`: a run that keeps none (the producers' calls
    are no-ops), e.g. a format written in one pass."""

    def __init__(self, state_dir: Path | None, writer_state: Callable[[Path], dict] | None = None,
                 writer_restore: Callable[[Path, dict], None] | None = None):
        self.dir = Path(state_dir) if state_dir is not None else None
        self._writer_state, self._writer_restore = writer_state, writer_restore
        self._saved: dict | None = None
        self.restored: Any = None  # the producer's tensors tree, once restore() ran
        if self.dir is not None and (self.dir / PROGRESS).is_file():
            self._saved = json.loads((self.dir / PROGRESS).read_text())

    @property
    def enabled(self) -> bool:
        return self.dir is not None and self._writer_state is not None

    @property
    def step(self) -> int | None:
        """The last checkpointed step (None: nothing to resume from)."""
        return None if self._saved is None else self._saved["step"]

    def record(self) -> dict:
        return dict(self._saved["record"]) if self._saved else {}

    def restore(self) -> Any:
        """Put the writer back as it was at the checkpoint; return the producer's saved tensors tree."""
        if self._saved is None:
            return None
        if self._writer_restore is not None:
            self._writer_restore(self.dir, self._saved["writer"])
        files = self._saved.get("tensor_file")
        tensors = load_file(str(self.dir / files)) if files else {}
        return unflatten(self._saved["tensors"], tensors) if self._saved.get("tensors") is not None else None

    def save(self, step: int, record: dict | None = None, tensors: Any = None) -> None:
        if not self.enabled:
            return
        writer = self._writer_state(self.dir)
        skeleton, flat = (None, {}) if tensors is None else flatten(tensors)
        tensor_file = None
        if flat:
            tensor_file = f"progress-tensors-{step:05d}.safetensors"
            tmp = self.dir / (tensor_file + ".tmp")
            save_file(flat, str(tmp))
            os.replace(tmp, self.dir / tensor_file)
        state = {"step": step, "record": record or {}, "writer": writer, "tensors": skeleton,
                 "tensor_file": tensor_file}
        _atomic_write_text(self.dir / PROGRESS, json.dumps(state, indent=1))
        self._saved = state
        # files the new checkpoint no longer names (an earlier step's tensors, the writer's old pieces)
        keep = {PROGRESS, "run.json", tensor_file, *writer.get("files", [])}
        for p in self.dir.iterdir():
            if p.name not in keep:
                p.unlink()
