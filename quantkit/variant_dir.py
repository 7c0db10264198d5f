"""What every format's variant directory holds besides its weights: the source's side files (config,
tokenizer, processor, chat template, remote-code modules) and the common part of `quantkit.json`.
A format writes its weights and config into the temporary output directory, then calls these.
"""
from __future__ import annotations

import shutil
import time

from .checkpoint import Checkpoint
from .plan import Plan
from .scheme import scheme_label
from .version import QUANTKIT_VERSION

# Source files a variant must not inherit: the source's model card describes another model, and
# the weights index is rewritten.
_NOT_COPIED = {"README.md", ".gitattributes"}


def copy_side_files(ckpt: Checkpoint, dest) -> None:
    for p in ckpt.side_files():
        if p.name not in _NOT_COPIED and p.name != "config.json":
            shutil.copy2(p, dest / p.name)


def manifest_record(ckpt: Checkpoint, plan: Plan, seconds: float, extra: dict) -> dict:
    """The manifest fields every format writes (the caller adds its own, then `write_manifest`)."""
    return {
        "quantkit_version": QUANTKIT_VERSION,
        "format": plan.format.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"id": ckpt.source, "revision": ckpt.revision, "model_type": ckpt.config.get("model_type"),
                   "architectures": ckpt.config.get("architectures")},
        "family": plan.family,
        "profile": plan.profile.to_dict(),
        "predicted_tensor_bytes": plan.predicted_bytes,
        "notes": plan.notes,
        "seconds": round(seconds, 2),
        **extra,
        "tensors": {e.name: {"role": e.role.label, "scheme": scheme_label(e.scheme),
                             **({"fallback": e.fallback} if e.fallback else {})}
                    for e in plan.entries},
    }
