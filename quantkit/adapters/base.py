"""What every model-family adapter provides. One adapter per family: adding Qwen3-MoE or
DeepSeek means adding one file under adapters/ and registering it in adapters/__init__.py."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import CheckpointError
from ..roles import Role


PROJ = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
        "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
_EXPERT_WEIGHT = re.compile(r"mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight")


def mlp_shapes(prefix: str, intermediate: int, hidden: int) -> dict[str, tuple[int, ...]]:
    """gate/up/down of one gated MLP (an expert, the shared experts, a dense MLP)."""
    return {prefix + "gate_proj.weight": (intermediate, hidden), prefix + "up_proj.weight": (intermediate, hidden),
            prefix + "down_proj.weight": (hidden, intermediate)}


def split_expert_tensors(tensors: dict) -> tuple[dict, dict]:
    """(per-expert weights keyed (k, proj), everything else) of one layer's tensors (layer prefix dropped)."""
    experts, rest = {}, {}
    for name, t in tensors.items():
        m = _EXPERT_WEIGHT.fullmatch(name)
        if m:
            experts[(int(m[1]), m[2])] = t
        else:
            rest[name] = t
    return experts, rest


def fuse_experts(experts: dict, ids) -> tuple:
    """transformers' in-memory layout: gate_up_proj [E, 2I, H] = cat(gate, up), down_proj [E, H, I]."""
    import torch

    gate_up = torch.stack([torch.cat([experts[(k, "gate")], experts[(k, "up")]]) for k in ids])
    return gate_up, torch.stack([experts[(k, "down")] for k in ids])


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


@dataclass(frozen=True)
class ProjectorTensor:
    """One tensor of a vision projector file (llama.cpp's mmproj): `source` (a checkpoint name) stored as
    `gguf` (llama.cpp's name; None: the format maps `tensor_map_name` through gguf's MMPROJ tensor map),
    whole or, with `part`, the slice `part` of dimension `part_dim` (a Conv3d kernel stored as 2-D halves);
    the parts of one source stacked along `part_dim` give it back."""
    source: str
    gguf: str | None = None
    tensor_map_name: str | None = None
    part: int | None = None
    part_dim: int = 0


@dataclass(frozen=True)
class Projector:
    """What a family's vision projector file holds (formats/gguf writes and reads it): llama.cpp's
    `clip.projector_type`, hyper-parameters as {GGUFWriter `add_<key>`: value} (the image mean/std come
    from the processor config, as llama.cpp's converter reads them), and the tensors in file order."""
    projector_type: str
    hparams: dict
    tensors: tuple[ProjectorTensor, ...]
    block_count: int


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
    # llama.cpp's vocabulary kind (`tokenizer.ggml.model`): "llama" = SentencePiece `tokenizer.model`,
    # "gpt2" = byte-level BPE from `tokenizer.json`; and its pre-tokenizer (`tokenizer.ggml.pre`)
    gguf_vocab: str = "llama"
    gguf_pre_tokenizer: str = "default"

    def __init__(self, config: dict):
        self.config = config
        self.shape = self._moe_shape()
        self._rules = self._name_rules()

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") in cls.model_types

    @property
    def takes_pictures(self) -> bool:
        """Whether the model reads images/videos: calibration then goes through its processor and keeps
        the samples with pictures (default: it has vision experts)."""
        return "vision" in self.shape.experts

    # -- the checkpoint as the core sees it ---------------------------------------------------------
    def checkpoint_view(self, ckpt):
        """The checkpoint as the plan, calibration, the producers and the formats see it. Default: as
        stored. A family whose checkpoints fuse all experts of a layer into 3-D tensors returns a view
        with one 2-D [out, in] weight per expert and projection (`adapters.expert_view`), so the core,
        which plans and writes 2-D tensors, needs no change; `loadable_state` undoes it for loading."""
        return ckpt

    def loadable_state(self, state: dict) -> dict:
        """Tensors under the view's names (e.g. a variant decoded by its format) -> a state dict the
        transformers class loads (default: as they are)."""
        return state

    # -- llama.cpp (GGUF) -----------------------------------------------------------------------------
    def text_fields(self) -> dict:
        """The language model's config fields (the config itself, or its `text_config`)."""
        return self.config.get("text_config") or self.config

    def gguf_hparams(self) -> dict[str, object]:
        """The family's llama.cpp hyper-parameters, as {GGUFWriter `add_<key>` method: value}, in the
        order its converter (convert_hf_to_gguf.py) writes them. Default: what every decoder-only MoE
        writes (TextModel.set_gguf_parameters)."""
        s, t = self.shape, self.text_fields()
        rope = t.get("rope_parameters") or {}
        out = {"block_count": s.num_layers, "context_length": int(t.get("max_position_embeddings", 131072)),
               "embedding_length": s.hidden_size, "feed_forward_length": int(t["intermediate_size"]),
               "head_count": s.num_attention_heads, "head_count_kv": s.num_key_value_heads,
               "rope_freq_base": float(rope.get("rope_theta", t.get("rope_theta", 10000.0))),
               "layer_norm_rms_eps": float(t.get("rms_norm_eps", 1e-5)),
               "expert_count": s.experts["text"], "expert_used_count": s.top_k}
        if t.get("head_dim"):
            out.update(key_length=int(t["head_dim"]), value_length=int(t["head_dim"]))
        return out

    def gguf_problems(self) -> list[str]:
        """What keeps llama.cpp's graph for `gguf_arch` from running this config ([] if nothing)."""
        return []

    def gguf_tensor_source(self, name: str) -> str:
        """The checkpoint name as llama.cpp's tensor map (`gguf.get_tensor_name_map`) knows it."""
        return name

    def gguf_projector(self):
        """The vision projector file (mmproj) llama.cpp reads beside the model, as a
        `formats.gguf`-independent description (adapters.gguf_projector.Projector), or None."""
        return None

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


def hidden_states(output):
    """The hidden states a decoder layer or MoE block returned: transformers modules return either the
    tensor or a tuple led by it (ERNIE-4.5-VL's MoE blocks add their router logits; text blocks do not)."""
    return output[0] if isinstance(output, tuple) else output


class LayerRunner:
    """How to run a family's model one decoder layer at a time (used by calibration and by
    sequential GPTQ). Subclasses name the transformers pieces; the streaming logic is generic."""

    layer_class_name: str = ""
    modeling_module: str = ""
    # where the decoder layers' tensors live in the checkpoint
    layers_prefix: str = "model.layers."

    def __init__(self, adapter: "Adapter"):
        self.adapter = adapter
        self.config = adapter.native_config()

    # -- pieces a family must name ---------------------------------------------------------------
    def text_config(self):
        return self.config

    def decoder_layers(self, model):
        """The ModuleList of decoder layers inside a model instance (a causal LM's, by default)."""
        return model.model.layers

    def final_norm_and_head(self, model):
        return model.model.norm, model.lm_head

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """On-disk tensors of one layer -> the decoder layer module's state dict."""
        raise NotImplementedError

    def moe_blocks(self, layer_module) -> list[tuple[str, object, object]]:
        """(modality, router module, fused experts module) of a decoder layer, [] for dense. Default:
        one expert set (`mlp.gate`, `mlp.experts`), which serves every token."""
        mlp = layer_module.mlp
        return [("text", mlp.gate, mlp.experts)] if hasattr(mlp, "experts") else []

    def expert_module_name(self, layer: int, modality: str, expert: int, proj: str) -> str:
        """The checkpoint module of one expert's projection (per-expert keys, as on the Hub)."""
        return f"{self.layer_prefix(layer)}mlp.experts.{expert}.{proj}_proj"

    def watch_prefix(self, model) -> tuple[list, dict]:
        """Forward hooks on the prefix model that record, while one sample is embedded, what the decoder
        layers need besides their own call arguments (Qwen3-VL: the DeepStack visual features added
        after the first layers): (hook handles, the dict they fill; its items join the layers' kwargs).
        Default: nothing."""
        return [], {}

    def run_layer(self, layer, n: int, hidden, kwargs: dict):
        """Decoder layer `n` on one sample's hidden states (what the model's layer loop does around the
        call, e.g. adding DeepStack features, goes here)."""
        return layer(hidden, **kwargs)

    # -- generic -------------------------------------------------------------------------------
    def layer_prefix(self, layer: int) -> str:
        return f"{self.layers_prefix}{layer}."

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
        state = {n: _f32(ckpt.read(n)) for n in ckpt.names() if not n.startswith(self.layers_prefix)}
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
