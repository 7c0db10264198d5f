"""Model-family adapters: all architecture knowledge (tensor names, config fields, shapes, what each
runtime's model code for the family reads, the published models' configs) lives here."""
from __future__ import annotations

import copy

from ..errors import CheckpointError
from .base import Adapter, MoEShape
from .ernie45_moe import Ernie45MoeAdapter
from .ernie45_vl import Ernie45VLAdapter

ADAPTERS: list[type[Adapter]] = [Ernie45VLAdapter, Ernie45MoeAdapter]


def adapter_for(config: dict, where: str = "config.json") -> Adapter:
    for cls in ADAPTERS:
        if cls.matches(config):
            return cls(config)
    known = ", ".join(sorted({t for cls in ADAPTERS for t in cls.model_types}))
    raise CheckpointError(f"{where}: unsupported architecture model_type={config.get('model_type')!r} "
                          f"(architectures={config.get('architectures')}); supported: {known}")


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
