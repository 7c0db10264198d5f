"""Qwen3 text MoE (e.g. Qwen/Qwen3-30B-A3B): `Qwen3MoeForCausalLM`.

On disk (the Hub repos and `save_pretrained`: transformers' conversion `qwen2_moe` merges the experts at
load time and splits them again at save time):
  model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight   per expert, [I, H] / [I, H] / [H, I]
  model.layers.N.mlp.gate.weight                            router [E, H] (softmax, top-k, renormalised
                                                            when norm_topk_prob)
  model.layers.N.self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k}_norm.weight [head_dim]
  model.layers.N.{input,post_attention}_layernorm.weight, model.norm.weight, model.embed_tokens.weight,
  lm_head.weight (untied in the 30B), and model.layers.N.mlp.{gate,up,down}_proj.weight for the layers
  in `mlp_only_layers` / off the `decoder_sparse_step` (none in the published models).
Evidence: transformers conversion_mapping.py ("qwen3_moe" -> "qwen2_moe": MergeModulelist over
`mlp.experts.*.gate_proj.weight`), llama.cpp conversion/qwen.py Qwen2MoeModel (stacks
`model.layers.{bid}.mlp.experts.{xid}.{w}.weight`), vLLM qwen3_moe.py load_weights
(`FusedMoE.make_expert_params_mapping(ckpt_gate_proj_name="gate_proj", ...)`).
"""
from __future__ import annotations

from ..errors import CheckpointError
from ..roles import Role
from .base import PROJ, Adapter, LayerRunner, MoEShape, NameRule, fuse_experts, mlp_shapes, split_expert_tensors

# Qwen/Qwen3-30B-A3B config.json as published (transformers 4.51 field names; transformers 5 reads
# rope_theta/rope_scaling into rope_parameters). 30.5B parameters, 3.3B active.
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "decoder_sparse_step": 1,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "max_window_layers": 48,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 768,
    "norm_topk_prob": True,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "output_router_logits": False,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

_P = r"(?P<p>gate_proj|up_proj|down_proj)"
_LINEAR_SUFFIX = r"(?:weight|bias|qweight|qzeros|scales|g_idx)"
_PACKED_SUFFIX = r"(?:weight|qweight|qzeros|scales|g_idx)"


def qwen3_moe_shape(t: dict, where: str) -> MoEShape:
    """The decoder's MoE shape from Qwen3-MoE text fields (also Qwen3-VL-MoE's `text_config`).
    transformers 5 writes `num_experts` as `num_local_experts`; both are read."""
    try:
        n_layers, hidden, heads = int(t["num_hidden_layers"]), int(t["hidden_size"]), int(t["num_attention_heads"])
        experts = int(t.get("num_experts", t.get("num_local_experts", 0)))
        step = int(t.get("decoder_sparse_step", 1) or 1)
        only_mlp = set(t.get("mlp_only_layers") or [])
        moe = tuple(i for i in range(n_layers) if i not in only_mlp and experts > 0 and (i + 1) % step == 0)
        return MoEShape(
            hidden_size=hidden, num_layers=n_layers, moe_layers=moe, experts={"text": experts},
            expert_intermediate={"text": int(t["moe_intermediate_size"])}, top_k=int(t["num_experts_per_tok"]),
            shared_experts=0, num_attention_heads=heads,
            num_key_value_heads=int(t.get("num_key_value_heads") or heads),
            head_dim=int(t.get("head_dim") or hidden // heads), vocab_size=int(t["vocab_size"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"config.json: field {e.args[0] if isinstance(e, KeyError) else e} missing or "
                              f"invalid for {where}")


def decoder_rules(layers: str, expert_role) -> list[NameRule]:
    """Names of a Qwen3-MoE decoder under `layers` (a regex prefix ending in `layers\\.`)."""
    L = layers + r"(?P<n>\d+)\."
    return [
        NameRule(L + r"mlp\.experts\.(?P<k>\d+)\." + _P + r"\.weight", expert_role),
        NameRule(L + r"mlp\.gate\.weight", lambda m: Role("router", int(m["n"]), "text")),
        NameRule(L + r"mlp\." + _P + r"\.(weight|bias)", lambda m: Role("dense_mlp", int(m["n"]), proj=PROJ[m["p"]])),
        NameRule(L + r"self_attn\.(?P<p>[qkvo]_proj)\.(weight|bias)",
                 lambda m: Role("attention", int(m["n"]), proj=PROJ[m["p"]])),
        NameRule(L + r"self_attn\.[qk]_norm\.weight", lambda m: Role("norm", int(m["n"]))),
        NameRule(L + r"(input_layernorm|post_attention_layernorm)\.weight", lambda m: Role("norm", int(m["n"]))),
    ]


def decoder_layer_shapes(s: MoEShape, prefix: str, n: int, dense_intermediate: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of decoder layer n besides its routed experts (those are the caller's: per expert or
    fused): norms, attention with q/k norms, the router (MoE layer) or the dense MLP."""
    h, d = s.hidden_size, s.head_dim
    q, kv = s.num_attention_heads * d, s.num_key_value_heads * d
    p = f"{prefix}{n}."
    out = {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
           p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
           p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
           p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,)}
    if n in s.moe_layers:
        out[p + "mlp.gate.weight"] = (s.experts["text"], h)
    else:
        out.update(mlp_shapes(p + "mlp.", dense_intermediate, h))
    return out


def vllm_decoder_patterns(layers: str) -> list[str]:
    """What vLLM's Qwen3-MoE loader maps to a parameter under `layers` (checkpoint names): vLLM
    qwen3_moe.py Qwen3MoeModel.load_weights: stacked_params_mapping (q/k/v -> qkv_proj, gate/up ->
    gate_up_proj for dense MLPs), expert_params_mapping (`mlp.experts.K.{gate,up,down}_proj.*` -> the
    FusedMoE `w13_*` / `w2_*`), the router `mlp.gate.weight` (ReplicatedLinear, quant_config=None),
    q/k norms, layer norms."""
    L = layers + r"(?P<n>\d+)\."
    return [L + r"(?:input_layernorm|post_attention_layernorm)\.weight",
            L + r"self_attn\.[qkvo]_proj\." + _LINEAR_SUFFIX,
            L + r"self_attn\.[qk]_norm\.weight",
            L + r"mlp\.(?:gate|up|down)_proj\." + _LINEAR_SUFFIX,
            L + r"mlp\.experts\.(?P<k>\d+)\.(?:gate|up|down)_proj\." + _PACKED_SUFFIX,
            L + r"mlp\.gate\.weight"]


def llama_cpp_problems(s: MoEShape, t: dict, arch: str, renormalised: bool) -> list[str]:
    """llama.cpp src/models/qwen3moe.cpp / qwen3vlmoe.cpp build every layer as MoE (ffn_gate_inp and the
    three _exps tensors are required, no dense branch) and always renormalise the top-k weights."""
    bad = []
    if list(s.moe_layers) != list(range(s.num_layers)):
        dense = sorted(set(range(s.num_layers)) - set(s.moe_layers))
        bad.append(f"layers {dense[:5]} are dense (mlp_only_layers / decoder_sparse_step); llama.cpp's {arch} "
                   "builds every layer as MoE")
    if not renormalised:
        bad.append(f"norm_topk_prob is false; llama.cpp's {arch} always renormalises the top-k routing weights")
    if t.get("hidden_act", "silu") != "silu":
        bad.append(f"hidden_act {t.get('hidden_act')!r}; llama.cpp's {arch} experts use SiLU")
    return bad


class Qwen3MoeAdapter(Adapter):
    family = "qwen3_moe"
    default_profile = "qwen3-moe"
    model_class_name = "Qwen3MoeForCausalLM"
    model_types = ("qwen3_moe",)
    REAL_CONFIGS = {"Qwen3-30B-A3B": {"hub": QWEN3_30B_A3B}}
    # llama.cpp src/models/qwen3moe.cpp; conversion/qwen.py Qwen3MoeModel (Qwen2MoeModel's tensors and
    # expert_feed_forward_length, vocabulary via _set_vocab_gpt2: pre-tokenizer "qwen2")
    gguf_arch = "qwen3moe"
    gguf_vocab = "gpt2"
    gguf_pre_tokenizer = "qwen2"

    def _moe_shape(self) -> MoEShape:
        return qwen3_moe_shape(self.config, "qwen3_moe")

    def _expert_role(self, m) -> Role:
        k = int(m["k"])
        if k >= self.shape.experts["text"]:
            raise CheckpointError(f"tensor {m.string}: expert {k} beyond the {self.shape.experts['text']} "
                                  "the config declares")
        return Role("routed_expert", int(m["n"]), "text", k, PROJ[m["p"]])

    def _name_rules(self) -> list[NameRule]:
        return decoder_rules(r"model\.layers\.", self._expert_role) + [
            NameRule(r"model\.norm\.weight", lambda m: Role("norm")),
            NameRule(r"model\.embed_tokens\.weight", lambda m: Role("embedding")),
            NameRule(r"lm_head\.weight", lambda m: Role("lm_head")),
        ]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The Hub / `save_pretrained` layout of the module docstring (as quantkit.reference.tiny_qwen3
        builds it)."""
        s, c = self.shape, self.config
        h, e, i_e = s.hidden_size, s.experts["text"], s.expert_intermediate["text"]
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (s.vocab_size, h), "model.norm.weight": (h,)}
        if not c.get("tie_word_embeddings", False):
            out["lm_head.weight"] = (s.vocab_size, h)
        for n in range(s.num_layers):
            out.update(decoder_layer_shapes(s, "model.layers.", n, int(c.get("intermediate_size", 0))))
            if n in s.moe_layers:
                for k in range(e):
                    out.update(mlp_shapes(f"model.layers.{n}.mlp.experts.{k}.", i_e, h))
        return out

    # vLLM qwen3_moe.py: Qwen3MoeForCausalLM, modules model.layers.N.self_attn.qkv_proj,
    # model.layers.N.mlp.experts (FusedMoE), model.layers.N.mlp.gate; no weight mapper.
    vllm_lm_prefix = ""

    def vllm_tensor_patterns(self) -> list[str]:
        return [r"lm_head\.weight", r"model\.embed_tokens\.weight", r"model\.norm\.weight",
                *vllm_decoder_patterns(r"model\.layers\.")]

    def vllm_config_problems(self, config: dict) -> list[str]:
        """vLLM registers the architecture Qwen3MoeForCausalLM and reads the transformers config as it is;
        Qwen3MoeMLP (dense layers) raises on any hidden_act but silu; FusedMoE takes num_experts,
        num_experts_per_tok, moe_intermediate_size, norm_topk_prob. Source: vLLM qwen3_moe.py."""
        bad = []
        if "Qwen3MoeForCausalLM" not in (config.get("architectures") or []):
            bad.append(f"architectures {config.get('architectures')}: vLLM registers Qwen3MoeForCausalLM")
        if config.get("hidden_act", "silu") != "silu":
            bad.append(f"hidden_act {config.get('hidden_act')!r}: vLLM's Qwen3MoeMLP supports silu only")
        for k in ("moe_intermediate_size", "num_experts_per_tok"):
            if k not in config:
                bad.append(f"{k} missing")
        return bad

    def gguf_hparams(self) -> dict[str, object]:
        """conversion/qwen.py Qwen2MoeModel.set_gguf_parameters: the common ones + expert width."""
        return {**super().gguf_hparams(), "expert_feed_forward_length": self.shape.expert_intermediate["text"]}

    def gguf_problems(self) -> list[str]:
        return llama_cpp_problems(self.shape, self.config, self.gguf_arch, bool(self.config.get("norm_topk_prob")))

    def runner(self) -> "Qwen3MoeRunner":
        return Qwen3MoeRunner(self)

    def native_config(self):
        from transformers import Qwen3MoeConfig
        return Qwen3MoeConfig(**{k: v for k, v in self.config.items() if k != "quantization_config"})


class Qwen3MoeRunner(LayerRunner):
    modeling_module = "transformers.models.qwen3_moe.modeling_qwen3_moe"
    layer_class_name = "Qwen3MoeDecoderLayer"

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """Per-expert tensors -> transformers' fused in-memory experts."""
        experts, state = split_expert_tensors(tensors)
        if experts:
            state["mlp.experts.gate_up_proj"], state["mlp.experts.down_proj"] = fuse_experts(
                experts, range(self.adapter.shape.experts["text"]))
        return state
