"""ERNIE-4.5 text MoE (e.g. baidu/ERNIE-4.5-21B-A3B-PT): `Ernie4_5_MoeForCausalLM`.

On disk: model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight, router `mlp.gate.weight` [E, hidden]
(not transposed, unlike the VL model), `mlp.moe_statics.e_score_correction_bias` [1, E],
`mlp.shared_experts.*`, dense MLPs outside [moe_layer_start_index, moe_layer_end_index].
"""
from __future__ import annotations

from ..errors import CheckpointError
from ..roles import Role
from .base import Adapter, LayerRunner, MoEShape, NameRule
from .ernie45_vl import (
    _PROJ,
    ernie_decoder_layer_shapes,
    ernie_decoder_rules,
    ernie_vllm_tensor_patterns,
    fuse_experts,
    mlp_shapes,
    split_expert_tensors,
)

# baidu/ERNIE-4.5-21B-A3B-PT (text-only MoE; llama.cpp arch `ernie4_5-moe`). Source: the defaults of
# transformers/models/ernie4_5_moe/configuration_ernie4_5_moe.py (documented as that checkpoint);
# moe_use_aux_free is a remote-era field of the Hub file that transformers keeps but does not read
# (its model always carries e_score_correction_bias).
ERNIE45_21B = {
    "architectures": ["Ernie4_5_MoeForCausalLM"],
    "model_type": "ernie4_5_moe",
    "dtype": "bfloat16",
    "vocab_size": 103424,
    "hidden_size": 2560,
    "intermediate_size": 12288,
    "num_hidden_layers": 28,
    "num_attention_heads": 20,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "use_cache": True,
    "use_bias": False,
    "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "moe_num_experts": 64,
    "moe_num_shared_experts": 2,
    "moe_intermediate_size": 1536,
    "moe_k": 6,
    "moe_layer_start_index": 1,
    "moe_layer_end_index": 27,
    "moe_layer_interval": 1,
    "moe_norm_min": 1e-12,
    "moe_use_aux_free": True,
    "router_aux_loss_coef": 0.001,
}


class Ernie45MoeAdapter(Adapter):
    family = "ernie45_moe"
    default_profile = "ernie45-moe"
    model_class_name = "Ernie4_5_MoeForCausalLM"
    model_types = ("ernie4_5_moe",)
    REAL_CONFIGS = {"ERNIE-4.5-21B-A3B": {"native": ERNIE45_21B}}
    # llama.cpp src/models/ernie4-5.cpp, conversion/ernie.py Ernie4_5MoeModel
    gguf_arch = "ernie4_5-moe"

    def _moe_shape(self) -> MoEShape:
        c = self.config
        try:
            n_layers, hidden, heads = int(c["num_hidden_layers"]), int(c["hidden_size"]), int(c["num_attention_heads"])
            start = int(c.get("moe_layer_start_index", 1))
            end = int(c.get("moe_layer_end_index", -1))
            end = n_layers - 1 if end < 0 else min(end, n_layers - 1)
            moe_layers = tuple(range(start, end + 1, int(c.get("moe_layer_interval", 1))))
            return MoEShape(
                hidden_size=hidden, num_layers=n_layers, moe_layers=moe_layers,
                experts={"text": int(c.get("moe_num_experts", 64))},
                expert_intermediate={"text": int(c.get("moe_intermediate_size", 1536))},
                top_k=int(c.get("moe_k", 6)), shared_experts=int(c.get("moe_num_shared_experts", 0) or 0),
                num_attention_heads=heads, num_key_value_heads=int(c.get("num_key_value_heads") or heads),
                head_dim=int(c.get("head_dim") or hidden // heads), vocab_size=int(c["vocab_size"]))
        except KeyError as e:
            raise CheckpointError(f"config.json: missing field {e.args[0]} for ernie4_5_moe")

    def _expert_role(self, m) -> Role:
        k = int(m["k"])
        if k >= self.shape.experts["text"]:
            raise CheckpointError(f"tensor {m.string}: expert {k} beyond the {self.shape.experts['text']} "
                                  "the config declares")
        return Role("routed_expert", int(m["n"]), "text", k, _PROJ[m["p"]])

    def _name_rules(self) -> list[NameRule]:
        return ernie_decoder_rules(self._expert_role)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The Hub / `save_pretrained` layout of the module docstring (as quantkit.reference.tiny,
        `build_tiny_text_moe`, builds it)."""
        s, config = self.shape, self.config
        h = s.hidden_size
        e, i_e = s.experts["text"], s.expert_intermediate["text"]
        dense_i = int(config["intermediate_size"]) if len(s.moe_layers) < s.num_layers else 0
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (s.vocab_size, h), "model.norm.weight": (h,)}
        if not config.get("tie_word_embeddings", True):
            out["lm_head.weight"] = (s.vocab_size, h)
        for n in range(s.num_layers):
            p = f"model.layers.{n}."
            out.update(ernie_decoder_layer_shapes(s, n, dense_i))
            if n not in s.moe_layers:
                continue
            for k in range(e):
                out.update(mlp_shapes(f"{p}mlp.experts.{k}.", i_e, h))
            out.update({p + "mlp.gate.weight": (e, h), p + "mlp.moe_statics.e_score_correction_bias": (1, e)})
        return out

    def vllm_tensor_patterns(self) -> list[str]:
        return ernie_vllm_tensor_patterns(vision=False)

    def gguf_hparams(self) -> dict[str, object]:
        """conversion/ernie.py Ernie4_5MoeModel: the common ones + the interleave step, the leading dense
        layers (= moe_layer_start_index), the expert width and the shared-expert count (their combined width
        is read from their tensors by the writer)."""
        s = self.shape
        return {**super().gguf_hparams(), "interleave_moe_layer_step": int(self.config.get("moe_layer_interval", 1)),
                "leading_dense_block_count": s.moe_layers[0],
                "expert_feed_forward_length": s.expert_intermediate["text"],
                "expert_shared_count": s.shared_experts}

    def runner(self) -> "Ernie45MoeRunner":
        return Ernie45MoeRunner(self)

    def native_config(self):
        from transformers import Ernie4_5_MoeConfig
        return Ernie4_5_MoeConfig(**{k: v for k, v in self.config.items() if k != "quantization_config"})


class Ernie45MoeRunner(LayerRunner):
    modeling_module = "transformers.models.ernie4_5_moe.modeling_ernie4_5_moe"
    layer_class_name = "Ernie4_5_MoeDecoderLayer"

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """Per-expert on-disk tensors -> fused in-memory experts; the router bias moves under the gate."""
        experts, rest = split_expert_tensors(tensors)
        state = {("mlp.gate.moe_statics.e_score_correction_bias" if name == "mlp.moe_statics.e_score_correction_bias"
                  else name): t for name, t in rest.items()}
        if experts:
            state["mlp.experts.gate_up_proj"], state["mlp.experts.down_proj"] = fuse_experts(
                experts, range(self.adapter.shape.experts["text"]))
        return state
