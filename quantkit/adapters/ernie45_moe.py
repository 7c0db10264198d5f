"""ERNIE-4.5 text MoE (e.g. baidu/ERNIE-4.5-21B-A3B-PT): `Ernie4_5_MoeForCausalLM`.

On disk: model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight, router `mlp.gate.weight` [E, hidden]
(not transposed, unlike the VL model), `mlp.moe_statics.e_score_correction_bias` [1, E],
`mlp.shared_experts.*`, dense MLPs outside [moe_layer_start_index, moe_layer_end_index].
"""
from __future__ import annotations

from ..errors import QuantkitError
from ..roles import Role
from .base import Adapter, LayerRunner, MoEShape, NameRule
from .ernie45_vl import _PROJ, ernie_decoder_rules, fuse_experts, split_expert_tensors


class Ernie45MoeAdapter(Adapter):
    family = "ernie45_moe"
    default_profile = "ernie45-moe"
    model_class_name = "Ernie4_5_MoeForCausalLM"

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") == "ernie4_5_moe"

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
            raise QuantkitError(f"config.json: missing field {e.args[0]} for ernie4_5_moe")

    def _expert_role(self, m) -> Role:
        k = int(m["k"])
        if k >= self.shape.experts["text"]:
            raise QuantkitError(f"tensor {m.string}: expert {k} beyond the {self.shape.experts['text']} "
                                "the config declares")
        return Role("routed_expert", int(m["n"]), "text", k, _PROJ[m["p"]])

    def _name_rules(self) -> list[NameRule]:
        return ernie_decoder_rules(self._expert_role)

    def runner(self) -> "Ernie45MoeRunner":
        return Ernie45MoeRunner(self)

    def native_config(self):
        from transformers import Ernie4_5_MoeConfig
        return Ernie4_5_MoeConfig(**{k: v for k, v in self.config.items() if k != "quantization_config"})


class Ernie45MoeRunner(LayerRunner):
    modeling_module = "transformers.models.ernie4_5_moe.modeling_ernie4_5_moe"
    layer_class_name = "Ernie4_5_MoeDecoderLayer"

    def decoder_layers(self, model):
        return model.model.layers

    def final_norm_and_head(self, model):
        return model.model.norm, model.lm_head

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """Per-expert on-disk tensors -> fused in-memory experts; the router bias moves under the gate."""
        experts, rest = split_expert_tensors(tensors)
        state = {("mlp.gate.moe_statics.e_score_correction_bias" if name == "mlp.moe_statics.e_score_correction_bias"
                  else name): t for name, t in rest.items()}
        if experts:
            state["mlp.experts.gate_up_proj"], state["mlp.experts.down_proj"] = fuse_experts(
                experts, range(self.adapter.shape.experts["text"]))
        return state

    def moe_blocks(self, layer_module):
        mlp = layer_module.mlp
        return [("text", mlp.gate, mlp.experts)] if hasattr(mlp, "experts") else []

    def expert_module_name(self, layer: int, modality: str, expert: int, proj: str) -> str:
        return f"model.layers.{layer}.mlp.experts.{expert}.{proj}_proj"
