"""Model-family adapters: all architecture knowledge (tensor names, config fields, shapes, what each
runtime's model code for the family reads, the published models' configs) lives here."""
from __future__ import annotations

import copy

from ..errors import CheckpointError
from .base import Adapter, MoEShape
from .ernie45_moe import Ernie45MoeAdapter
from .ernie45_vl import Ernie45VLAdapter
from .qwen3_moe import Qwen3MoeAdapter
from .qwen3_vl_moe import Qwen3VLMoeAdapter

ADAPTERS: list[type[Adapter]] = [Ernie45VLAdapter, Ernie45MoeAdapter, Qwen3MoeAdapter, Qwen3VLMoeAdapter]


def adapter_for(config: dict, where: str = "config.json") -> Adapter:
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: not a JSON object; not a model config")
    for cls in ADAPTERS:
        if cls.matches(config):
            try:
                return cls(config)
            except CheckpointError:
                raise
            except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
                raise CheckpointError(f"{where}: a field has the wrong type or is missing for {cls.family} "
                                      f"({e.__class__.__name__}: {e})") from None
    known = ", ".join(sorted({t for cls in ADAPTERS for t in cls.model_types}))
    remote = (" It names remote code (auto_map); quantkit never runs a checkpoint's own code: use the model's "
              "transformers-native checkpoint or config.") if config.get("auto_map") else ""
    raise CheckpointError(f"{where}: unsupported architecture model_type={config.get('model_type')!r} "
                          f"(architectures={config.get('architectures')}); supported: {known}.{remote}")


def real_models() -> dict[str, tuple[str, ...]]:
    """The published models whose configs quantkit carries: {model name: its config flavours}."""
    return {name: tuple(flavours) for cls in ADAPTERS for name, flavours in cls.REAL_CONFIGS.items()}


def real_config(name: str, flavour: str | None = None) -> dict:
    """A fresh copy of the config.json of the published model `name` (e.g. "ERNIE-4.5-VL-28B-A3B"),
    in `flavour` (e.g. "native" / "remote"; None: the first the adapter lists)."""
    for cls in ADAPTERS:
        flavours = cls.REAL_CONFIGS.get(name)
        if flavours is None:
            continue
        key = flavour or next(iter(flavours))
        if key not in flavours:
            raise KeyError(f"{name}: no {key!r} config flavour (known: {', '.join(flavours)})")
        return copy.deepcopy(flavours[key])
    raise KeyError(f"{name}: not a known published model ({', '.join(real_models())})")


__all__ = ["ADAPTERS", "Adapter", "MoEShape", "adapter_for", "real_config", "real_models"]
