"""Write a variant directory: quantized and kept tensors in bounded shards, the source's config with
`quantization_config` added, every side file a runtime reads, and the `quantkit.json` manifest.

Everything is written into a temporary directory and renamed into place at the end
(`atomic_output_dir`), so a failed or interrupted run leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from .adapters import adapter_for
from .checkpoint import Checkpoint, ShardWriter, atomic_output_dir
from .errors import QuantkitError
from .plan import Plan, _scheme_label
from .quant_config import build_quantization_config
from .version import QUANTKIT_VERSION

MANIFEST = "quantkit.json"
# Source files a variant must not inherit: the source's model card describes another model, and
# the weights index is rewritten.
_NOT_COPIED = {"README.md", ".gitattributes"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_checksums(directory: Path) -> dict[str, dict]:
    """sha256 and size of every file in `directory` except the manifest itself."""
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            out[str(p.relative_to(directory))] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def write_manifest(directory: Path, manifest: dict) -> None:
    manifest = {**manifest, "files": file_checksums(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise QuantkitError(f"{directory}: no {MANIFEST}; not a quantkit variant")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise QuantkitError(f"{path}: invalid JSON ({e})")


def write_variant(
    ckpt: Checkpoint,
    plan: Plan,
    produce: Callable[[Callable[[dict[str, torch.Tensor]], None]], None],
    out: Path,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = 2 * 2**30,
    extra: dict | None = None,
) -> Path:
    """`produce(add)` calls `add` with dicts of output tensors (a kept tensor, or one module's
    qweight/qzeros/scales/g_idx), in any grouping; they are flushed to shards as they come.
    `extra` goes into the manifest after `produce` returns, so a producer may fill it in."""
    out = Path(out)
    adapter = adapter_for(ckpt.config)
    qcfg = build_quantization_config(plan, adapter)  # fail early if the plan cannot be described
    started = time.time()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        writer = ShardWriter(tmp, max_shard_bytes)
        def add(group: dict[str, torch.Tensor]) -> None:
            for name, t in group.items():
                writer.add(name, t)

        produce(add)
        writer.close()
        if writer.total_bytes != plan.predicted_bytes:
            raise QuantkitError(f"internal: wrote {writer.total_bytes} tensor bytes, plan predicted "
                                f"{plan.predicted_bytes}; please report this")
        _copy_side_files(ckpt, tmp)
        config = dict(ckpt.config)
        config["quantization_config"] = qcfg
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        write_manifest(tmp, _manifest(ckpt, plan, time.time() - started, extra or {}))
    return out


def _copy_side_files(ckpt: Checkpoint, dest: Path) -> None:
    for p in ckpt.side_files():
        if p.name not in _NOT_COPIED and p.name != "config.json":
            shutil.copy2(p, dest / p.name)


def _manifest(ckpt: Checkpoint, plan: Plan, seconds: float, extra: dict) -> dict:
    return {
        "quantkit_version": QUANTKIT_VERSION,
        "format": "gptq",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"id": ckpt.source, "revision": ckpt.revision, "model_type": ckpt.config.get("model_type"),
                   "architectures": ckpt.config.get("architectures")},
        "family": plan.family,
        "profile": plan.profile.to_dict(),
        "predicted_tensor_bytes": plan.predicted_bytes,
        "notes": plan.notes,
        "seconds": round(seconds, 2),
        **extra,
        "tensors": {e.name: {"role": e.role.label, "scheme": _scheme_label(e.scheme),
                             **({"fallback": e.fallback} if e.fallback else {})}
                    for e in plan.entries},
    }
