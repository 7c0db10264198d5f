"""What every model-family adapter provides. One adapter per family: adding Qwen3-MoE or
DeepSeek means adding one file under adapters/ and registering it in adapters/__init__.py."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import QuantkitError
from ..roles import Role


@dataclass(frozen=True)
class MoEShape:
    hidden_size: int
    num_layers: int
    moe_layers: tuple[int, ...]
    experts: dict[str, int]  # modality -> routed experts per layer
    expert_intermediate: dict[str, int]  # modality -> expert width
    top_k: int
    shared_experts: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    vision_depth: int = 0
    vision_hidden: int = 0

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.experts)


@dataclass
class NameRule:
    """A regex over a tensor name and a function from its match to a Role."""
    pattern: str
    make: object  # Callable[[re.Match], Role]
    _rx: re.Pattern = field(init=False, repr=False)

    def __post_init__(self):
        self._rx = re.compile(self.pattern)


class Adapter:
    family: str = ""
    default_profile: str = ""
    # transformers class used by quantkit.load / calibration for this family
    model_class_name: str = ""

    def __init__(self, config: dict):
        self.config = config
        self.shape = self._moe_shape()
        self._rules = self._name_rules()

    @classmethod
    def matches(cls, config: dict) -> bool:
        raise NotImplementedError

    def _moe_shape(self) -> MoEShape:
        raise NotImplementedError

    def _name_rules(self) -> list[NameRule]:
        raise NotImplementedError

    def role_of(self, name: str) -> Role:
        for rule in self._rules:
            m = rule._rx.fullmatch(name)
            if m:
                return rule.make(m)
        raise QuantkitError(f"tensor {name}: not recognised by the {self.family} adapter; "
                            "the checkpoint does not match its architecture")

    def fused_group(self, name: str, role: Role) -> str | None:
        """Tensors that one runtime kernel reads together and that must therefore share a bit
        width (vLLM: all routed experts of one modality in one layer; q/k/v; gate/up)."""
        if role.kind == "routed_expert":
            return f"layers.{role.layer}.experts.{role.modality}"
        if role.kind == "attention" and role.proj in ("q", "k", "v"):
            return f"layers.{role.layer}.qkv"
        if role.kind in ("shared_expert", "dense_mlp") and role.proj in ("gate", "up"):
            return f"layers.{role.layer}.{role.kind}.gate_up"
        return None

    def native_config(self):
        """A transformers config object for instantiating the model class (any flavour on disk)."""
        raise NotImplementedError

    def model_class(self):
        import transformers
        return getattr(transformers, self.model_class_name)
