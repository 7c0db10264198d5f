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


def remote_code_problems(config: dict, variant) -> list[str]:
    """What keeps a runtime from resolving the config's classes: a model_type transformers does not
    know needs `auto_map.AutoConfig`, and every `MODULE.Class` that `auto_map` names needs MODULE.py in
    the variant (served with --trust-remote-code). Source: transformers 5.24
    dynamic_module_utils.get_class_from_dynamic_module; shared/notes/formats.md (vLLM needs the repo's
    *.py files)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    auto_map = config.get("auto_map") or {}
    bad = []
    if config.get("model_type") not in CONFIG_MAPPING_NAMES and "AutoConfig" not in auto_map:
        bad.append(f"model_type {config.get('model_type')!r} is not built into transformers and config.json has no "
                   "auto_map.AutoConfig")
    for key, ref in sorted(auto_map.items()):
        for r in (ref if isinstance(ref, list) else [ref]):
            if not r:
                continue
            module = r.split("--")[-1].rsplit(".", 1)[0]
            if not (variant / f"{module.replace('.', '/')}.py").is_file():
                bad.append(f"auto_map.{key} -> {r}: {module}.py is not in the variant")
    return bad
