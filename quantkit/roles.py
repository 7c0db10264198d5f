"""The role vocabulary: what a tensor *is* in the model, independent of its architecture's names.

Only adapters map names to roles; everything downstream (profiles, plan, reports) speaks in roles.
"""
from __future__ import annotations

from dataclasses import dataclass

ROUTED_EXPERT = "routed_expert"
SHARED_EXPERT = "shared_expert"
ATTENTION = "attention"
DENSE_MLP = "dense_mlp"
ROUTER = "router"
ROUTER_BIAS = "router_bias"
VISION_TOWER = "vision_tower"
RESAMPLER = "resampler"
EMBEDDING = "embedding"
LM_HEAD = "lm_head"
NORM = "norm"

ALL_KINDS = (ROUTED_EXPERT, SHARED_EXPERT, ATTENTION, DENSE_MLP, ROUTER, ROUTER_BIAS,
             VISION_TOWER, RESAMPLER, EMBEDDING, LM_HEAD, NORM)
# Roles whose 2-D `.weight` tensors are linear layers a GPTQ loader can take quantized.
LINEAR_KINDS = (ROUTED_EXPERT, SHARED_EXPERT, ATTENTION, DENSE_MLP)
# Roles that must never be quantized: serving engines read them as float (vLLM: a quantized
# router ends in `KeyError: ...gate.qweight`; routing runs in fp32) and accuracy hinges on them.
NEVER_QUANTIZED = (ROUTER, ROUTER_BIAS, NORM)


@dataclass(frozen=True)
class Role:
    kind: str
    layer: int | None = None
    modality: str | None = None  # "text" / "vision" for routed experts and routers
    expert: int | None = None  # index within its modality
    proj: str | None = None  # gate / up / down / q / k / v / o

    def __post_init__(self):
        if self.kind not in ALL_KINDS:
            raise ValueError(f"unknown role kind {self.kind!r}")

    @property
    def label(self) -> str:
        """The row name used in tables: the kind, split by modality where there is one."""
        return f"{self.kind}.{self.modality}" if self.modality else self.kind

    @property
    def is_linear(self) -> bool:
        return self.kind in LINEAR_KINDS
