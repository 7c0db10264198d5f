"""Model-family adapters: all architecture knowledge (tensor names, config fields) lives here."""
from __future__ import annotations

from ..errors import QuantkitError
from .base import Adapter, MoEShape
from .ernie45_moe import Ernie45MoeAdapter
from .ernie45_vl import Ernie45VLAdapter

ADAPTERS: list[type[Adapter]] = [Ernie45VLAdapter, Ernie45MoeAdapter]


def adapter_for(config: dict, where: str = "config.json") -> Adapter:
    for cls in ADAPTERS:
        if cls.matches(config):
            return cls(config)
    known = ", ".join(sorted({"ernie4_5_vl_moe", "ernie4_5_moe_vl", "ernie4_5_moe"}))
    raise QuantkitError(f"{where}: unsupported architecture model_type={config.get('model_type')!r} "
                        f"(architectures={config.get('architectures')}); supported: {known}")


__all__ = ["ADAPTERS", "Adapter", "MoEShape", "adapter_for"]
