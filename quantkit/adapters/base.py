"""What every model-family adapter provides. One adapter per family: adding Qwen3-MoE or
DeepSeek means adding one file under adapters/ and registering it in adapters/__init__.py."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import CheckpointError
from ..roles import Role


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, value_bytes: int) -> int:
    """K and V of every layer for one token: 2 x layers x kv_heads x head_dim x value bytes (standard
    multi-head / grouped-query attention; a family with another cache layout overrides
    `Adapter.kv_cache_bytes_per_token`)."""
    return 2 * layers * kv_heads * head_dim * value_bytes


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
    # config.json `model_type` values this adapter reads (every flavour of the family)
    model_types: tuple[str, ...] = ()
    # Published checkpoints of the family, by model name: {flavour: config.json}, the first flavour the
    # default. Lets sizes and shapes of the real models be computed without downloading them
    # (`adapters.real_config`).
    REAL_CONFIGS: dict[str, dict[str, dict]] = {}

    # -- GGUF (llama.cpp) ------------------------------------------------------------------------
    # llama.cpp's architecture for this family (`general.architecture`, a `gguf.MODEL_ARCH_NAMES`
    # value); None: llama.cpp has none, and `gguf_unsupported` says so in the refusal.
    gguf_arch: str | None = None
    gguf_unsupported: str = ""

    def __init__(self, config: dict):
        self.config = config
        self.shape = self._moe_shape()
        self._rules = self._name_rules()

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") in cls.model_types

    def _moe_shape(self) -> MoEShape:
        raise NotImplementedError

    def _name_rules(self) -> list[NameRule]:
        raise NotImplementedError

    def role_of(self, name: str) -> Role:
        for rule in self._rules:
            m = rule._rx.fullmatch(name)
            if m:
                return rule.make(m)
        raise CheckpointError(f"tensor {name}: not recognised by the {self.family} adapter; "
                              "the checkpoint does not match its architecture")

    # -- shapes from the config alone --------------------------------------------------------------
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of a checkpoint of this config (on-disk names, the Hub / `save_pretrained`
        layout) with its shape, computed from the config alone: the plan (and so the exact bytes of
        every profile) of a model that is not on this machine."""
        raise NotImplementedError

    def kv_cache_bytes_per_token(self, value_bytes: int) -> int:
        """Bytes of the KV cache per token of context at `value_bytes` per cached value."""
        s = self.shape
        return kv_cache_bytes(s.num_layers, s.num_key_value_heads, s.head_dim, value_bytes)

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

    # vLLM's module names for this family (what its `dynamic` rules are matched against)
    vllm_lm_prefix: str = ""

    def vllm_unit(self, module: str, role: Role) -> tuple[str | None, str, str]:
        """(vLLM module name, unit kind, shard) for a checkpoint module: vLLM fuses q/k/v into
        `qkv_proj`, gate/up into `gate_up_proj` and the routed experts of a layer and modality into
        one FusedMoE module; kinds are linear / moe / router / vision; (None, "", "") if vLLM has
        no module for it (norms, embeddings)."""
        lm, layer = self.vllm_lm_prefix, role.layer
        if role.kind in ("attention", "dense_mlp", "shared_expert"):
            head, _, last = module.rpartition(".")
            fused = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                     "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}.get(last, last)
            return f"{lm}{head}.{fused}", "linear", role.proj
        if role.kind == "routed_expert":
            return f"{lm}model.layers.{layer}.mlp.{self.vllm_experts_name(role.modality)}", "moe", role.proj
        if role.kind == "router":
            return f"{lm}model.layers.{layer}.mlp.{self.vllm_router_name(role.modality)}", "router", ""
        if role.kind in ("vision_tower", "resampler"):
            return module, "vision", ""
        return None, "", ""

    def vllm_experts_name(self, modality: str) -> str:
        return "experts"

    def vllm_router_name(self, modality: str) -> str:
        return "gate"

    def vllm_config_problems(self, config: dict) -> list[str] | None:
        """What keeps vLLM's model code for this family from building the model out of `config`
        ([] if nothing); None when vLLM reads the family's transformers config as it is."""
        return None

    def vllm_tensor_patterns(self) -> list[str]:
        """Regexes (fullmatch) of every tensor name vLLM's loader for this family maps to a parameter,
        quantized modules' `qweight/qzeros/scales/g_idx` included; a routed expert's pattern names its
        on-disk expert number `(?P<k>...)`."""
        raise NotImplementedError

    def native_config(self):
        """A transformers config object for instantiating the model class (any flavour on disk)."""
        raise NotImplementedError

    def model_class(self):
        import transformers
        return getattr(transformers, self.model_class_name)

    def runner(self) -> "LayerRunner":
        """The layer-by-layer runner for this family (calibration, sequential GPTQ)."""
        raise NotImplementedError

    @staticmethod
    def input_group(module: str) -> str:
        """Modules that read the same input share one Hessian: q/k/v, and gate/up."""
        for members, shared in ((("q_proj", "k_proj", "v_proj"), "qkv_proj"), (("gate_proj", "up_proj"), "gate_up_proj")):
            head, _, last = module.rpartition(".")
            if last in members:
                return f"{head}.{shared}"
        return module


class LayerRunner:
    """How to run a family's model one decoder layer at a time (used by calibration and by
    sequential GPTQ). Subclasses name the transformers pieces; the streaming logic is generic."""

    layer_class_name: str = ""
    modeling_module: str = ""

    def __init__(self, adapter: "Adapter"):
        self.adapter = adapter
        self.config = adapter.native_config()

    # -- pieces a family must name ---------------------------------------------------------------
    def text_config(self):
        return self.config

    def decoder_layers(self, model):
        """The ModuleList of decoder layers inside a model instance."""
        raise NotImplementedError

    def final_norm_and_head(self, model):
        raise NotImplementedError

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """On-disk tensors of one layer -> the decoder layer module's state dict."""
        raise NotImplementedError

    def moe_blocks(self, layer_module) -> list[tuple[str, object, object]]:
        """(modality, router module, fused experts module) of a decoder layer, [] for dense."""
        raise NotImplementedError

    def expert_module_name(self, layer: int, modality: str, expert: int, proj: str) -> str:
        raise NotImplementedError

    # -- generic -------------------------------------------------------------------------------
    def layer_prefix(self, layer: int) -> str:
        return f"model.layers.{layer}."

    def prefix_model(self, ckpt):
        """The model without decoder layers (embeddings, vision tower, resampler, norm, head), loaded
        through transformers so its key conversions apply. Memory: everything but the layers."""
        import copy

        import torch

        cfg = copy.deepcopy(self.config)
        text = cfg.text_config if hasattr(cfg, "text_config") else cfg
        text.num_hidden_layers = 0
        text.mlp_layer_types = []
        for attr in ("moe_layer_start_index", "moe_layer_end_index"):
            if hasattr(text, attr):
                setattr(text, attr, 0)
        layer_prefix = "model.layers."
        state = {n: _f32(ckpt.read(n)) for n in ckpt.names() if not n.startswith(layer_prefix)}
        model = self.adapter.model_class().from_pretrained(None, config=cfg, state_dict=state, dtype=torch.float32)
        # The forward loops over `layers[:num_hidden_layers]`: restore the real count wherever the
        # model keeps a config, so a stand-in first layer gets called.
        real = self.text_config().num_hidden_layers
        # Layers built alone must use the attention/experts kernels the loaded model chose (with
        # sdpa the causal mask is implicit: an eager layer given the same `None` mask would not be causal).
        loaded = getattr(model.config, "text_config", model.config)
        for attr in ("_attn_implementation", "_experts_implementation"):
            if getattr(loaded, attr, None) is not None:
                setattr(self.text_config(), attr, getattr(loaded, attr))
        for sub in model.modules():
            c = getattr(sub, "config", None)
            c = getattr(c, "text_config", c)
            if c is not None and hasattr(c, "num_hidden_layers") and not hasattr(c, "depth"):
                c.num_hidden_layers = real
        return model.eval()

    def build_layer(self, ckpt, layer: int, overrides: dict | None = None):
        """Decoder layer `layer` with its weights from the checkpoint (or `overrides`, by on-disk
        name, e.g. dequantized weights in sequential mode), in fp32.

        Memory: the module is created on the meta device and takes the tensors as its parameters
        (no random init, no copy); tensors are fused in their on-disk dtype and upcast one at a
        time, so the peak is about the fp32 layer plus one bf16 copy, not three fp32 copies."""
        import torch

        with torch.device("meta"):
            module = self._layer_class()(self.text_config(), layer)
        prefix = self.layer_prefix(layer)
        names = [n for n in ckpt.names() if n.startswith(prefix)]
        tensors = ckpt.read_many(names)
        if overrides:
            tensors.update({n: t for n, t in overrides.items() if n.startswith(prefix)})
        state = self.layer_state({n[len(prefix):]: t for n, t in tensors.items()}, layer)
        del tensors
        for name in list(state):
            state[name] = _f32(state.pop(name)).contiguous()
        missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
        del state
        left = [n for n, p in list(module.named_parameters()) + list(module.named_buffers()) if p.is_meta]
        if missing or unexpected or left:
            raise CheckpointError(f"layer {layer}: checkpoint tensors do not fit the model "
                                  f"(missing {(missing or left)[:3]}, unexpected {unexpected[:3]})")
        return module.to(torch.float32).eval()

    def _layer_class(self):
        import importlib
        mod = importlib.import_module(self.modeling_module)
        return getattr(mod, self.layer_class_name)


def _f32(t):
    return t.float() if t.is_floating_point() else t
