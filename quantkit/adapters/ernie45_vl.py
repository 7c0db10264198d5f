"""ERNIE-4.5-VL MoE (e.g. baidu/ERNIE-4.5-VL-28B-A3B-PT, -Thinking).

On-disk layout (both config flavours share it, see shared/notes/formats.md):
  model.layers.N.mlp.experts.K.{gate,up,down}_proj.weight   text experts K < E, vision E <= K < 2E
  model.layers.N.mlp.gate.weight / gate.weight_1             routers (text / vision), stored [hidden, E]
  model.layers.N.mlp.moe_statics.e_score_correction_bias    [2, E]: text row, vision row
  model.layers.N.mlp.shared_experts.*, model.layers.0.mlp.*  (dense first layer)
  model.vision_model.*, model.resampler_model.*, model.embed_tokens, lm_head (tied by default)
Config flavours: transformers-native `ernie4_5_vl_moe` (nested text_config / vision_config) and the
remote-code `ernie4_5_moe_vl` (flat fields, `moe_num_experts: [E, E]`, `im_patch_id`).
"""
from __future__ import annotations

import re

import torch

from ..errors import QuantkitError
from ..roles import Role
from .base import Adapter, LayerRunner, MoEShape, NameRule

NATIVE = "ernie4_5_vl_moe"
REMOTE = "ernie4_5_moe_vl"

_PROJ = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o",
         "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


LAYER = r"model\.layers\.(?P<n>\d+)\."
_MLP_PROJ = r"(?P<p>gate_proj|up_proj|down_proj)"


def ernie_decoder_rules(expert_role) -> list[NameRule]:
    """Names both ERNIE-4.5 families share (text MoE and VL): decoder layers, embeddings, head."""
    L, P = LAYER, _MLP_PROJ
    return [
        NameRule(L + r"mlp\.experts\.(?P<k>\d+)\." + P + r"\.weight", expert_role),
        NameRule(L + r"mlp\.shared_experts\." + P + r"\.(weight|bias)",
                 lambda m: Role("shared_expert", int(m["n"]), proj=_PROJ[m["p"]])),
        NameRule(L + r"mlp\.gate\.weight", lambda m: Role("router", int(m["n"]), "text")),
        NameRule(L + r"mlp\.moe_statics\.e_score_correction_bias", lambda m: Role("router_bias", int(m["n"]))),
        NameRule(L + r"mlp\." + P + r"\.(weight|bias)", lambda m: Role("dense_mlp", int(m["n"]), proj=_PROJ[m["p"]])),
        NameRule(L + r"self_attn\.(?P<p>[qkvo]_proj)\.(weight|bias)",
                 lambda m: Role("attention", int(m["n"]), proj=_PROJ[m["p"]])),
        NameRule(L + r"(input_layernorm|post_attention_layernorm)\.weight", lambda m: Role("norm", int(m["n"]))),
        NameRule(r"model\.norm\.weight", lambda m: Role("norm")),
        NameRule(r"model\.embed_tokens\.weight", lambda m: Role("embedding")),
        NameRule(r"lm_head\.weight", lambda m: Role("lm_head")),
    ]


_EXPERT_WEIGHT = re.compile(r"mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight")


def split_expert_tensors(tensors: dict) -> tuple[dict, dict]:
    """(per-expert weights keyed (k, proj), everything else) of one layer's on-disk tensors."""
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
    gate_up = torch.stack([torch.cat([experts[(k, "gate")], experts[(k, "up")]]) for k in ids])
    return gate_up, torch.stack([experts[(k, "down")] for k in ids])


def _as_pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise QuantkitError(f"config.json: {what} must be an int or a [text, vision] pair, got {v!r}")


class Ernie45VLAdapter(Adapter):
    family = "ernie45_vl"
    default_profile = "ernie45-vl"
    model_class_name = "Ernie4_5_VLMoeForConditionalGeneration"

    @classmethod
    def matches(cls, config: dict) -> bool:
        return config.get("model_type") in (NATIVE, REMOTE)

    @property
    def flavour(self) -> str:
        return "native" if self.config.get("model_type") == NATIVE else "remote"

    def _text(self) -> dict:
        """Text-model fields, wherever the flavour keeps them."""
        return self.config["text_config"] if self.flavour == "native" else self.config

    def _moe_shape(self) -> MoEShape:
        t, c = self._text(), self.config
        try:
            n_layers = int(t["num_hidden_layers"])
            hidden = int(t["hidden_size"])
            heads = int(t["num_attention_heads"])
            if self.flavour == "native":
                e_text = e_vis = int(t.get("moe_num_experts", 64))
                types = t.get("mlp_layer_types") or ["dense"] + ["sparse"] * (n_layers - 1)
                moe_layers = tuple(i for i, kind in enumerate(types) if kind == "sparse")
                v = c.get("vision_config", {})
                v_depth, v_hidden = int(v.get("depth", 32)), int(v.get("hidden_size", 1280))
            else:
                e_text, e_vis = _as_pair(t["moe_num_experts"], "moe_num_experts")
                start = min(_as_pair(t.get("moe_layer_start_index", 1), "moe_layer_start_index"))
                end = max(_as_pair(t.get("moe_layer_end_index", n_layers - 1), "moe_layer_end_index"))
                end = n_layers - 1 if end < 0 else min(end, n_layers - 1)
                step = int(t.get("moe_layer_interval", 1))
                moe_layers = tuple(range(start, end + 1, step))
                v = c.get("vision_config", {})
                v_depth, v_hidden = int(v.get("depth", 32)), int(v.get("embed_dim", v.get("hidden_size", 1280)))
            i_text, i_vis = _as_pair(t.get("moe_intermediate_size", [1536, 512]), "moe_intermediate_size")
            return MoEShape(
                hidden_size=hidden, num_layers=n_layers, moe_layers=moe_layers,
                experts={"text": e_text, "vision": e_vis},
                expert_intermediate={"text": i_text, "vision": i_vis},
                top_k=int(t.get("moe_k", 6)), shared_experts=int(t.get("moe_num_shared_experts", 2)),
                num_attention_heads=heads, num_key_value_heads=int(t.get("num_key_value_heads") or heads),
                head_dim=int(t.get("head_dim") or hidden // heads), vocab_size=int(t["vocab_size"]),
                vision_depth=v_depth, vision_hidden=v_hidden)
        except KeyError as e:
            raise QuantkitError(f"config.json: missing field {e.args[0]} for {c.get('model_type')}")

    def _expert_role(self, m) -> Role:
        k, e_text = int(m["k"]), self.shape.experts["text"]
        total = e_text + self.shape.experts["vision"]
        if k >= total:
            raise QuantkitError(f"tensor {m.string}: expert {k} beyond the {total} the config declares")
        modality, idx = ("text", k) if k < e_text else ("vision", k - e_text)
        return Role("routed_expert", int(m["n"]), modality, idx, _PROJ[m["p"]])

    def _name_rules(self) -> list[NameRule]:
        return ernie_decoder_rules(self._expert_role) + [
            NameRule(LAYER + r"mlp\.gate\.weight_1", lambda m: Role("router", int(m["n"]), "vision")),
            NameRule(r"model\.vision_model\..+", lambda m: Role("vision_tower")),
            NameRule(r"model\.resampler_model\..+", lambda m: Role("resampler")),
        ]

    # vLLM's Ernie4_5_VLMoeForConditionalGeneration: hf_to_vllm_mapper puts the language model
    # under `language_model.model.`; experts and routers are per modality (vLLM ernie45_vl_moe.py).
    vllm_lm_prefix = "language_model."

    def vllm_experts_name(self, modality: str) -> str:
        return f"{modality}_experts"

    def vllm_router_name(self, modality: str) -> str:
        return f"{modality}_experts_gate"

    def runner(self) -> "Ernie45VLRunner":
        return Ernie45VLRunner(self)

    def native_config(self):
        from transformers import Ernie4_5_VLMoeConfig

        if self.flavour == "native":
            return Ernie4_5_VLMoeConfig(**{k: v for k, v in self.config.items() if k != "quantization_config"})
        return Ernie4_5_VLMoeConfig(**remote_to_native(self.config, self.shape))


def remote_to_native(c: dict, shape: MoEShape) -> dict:
    """Field mapping from the remote-code flavour to transformers' native config (for loading and
    calibration only: variants keep the source's own config.json)."""
    v = c.get("vision_config", {})
    embed = shape.vision_hidden
    head_dim = shape.head_dim
    # mrope: `freq_allocation` rotary pairs go to time, the rest split over height and width
    # (real model: 20 of 64 -> [22, 22, 20])
    temporal = int(c.get("freq_allocation", (head_dim // 2) * 5 // 16))
    spatial = (head_dim // 2 - temporal) // 2
    text = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size,
        intermediate_size=int(c.get("intermediate_size", 4 * shape.hidden_size)),
        num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, rms_norm_eps=float(c.get("rms_norm_eps", 1e-5)),
        max_position_embeddings=int(c.get("max_position_embeddings", 131072)),
        use_bias=bool(c.get("use_bias", False)), tie_word_embeddings=bool(c.get("tie_word_embeddings", True)),
        moe_num_experts=shape.experts["text"], moe_k=shape.top_k,
        moe_intermediate_size=[shape.expert_intermediate["text"], shape.expert_intermediate["vision"]],
        moe_num_shared_experts=shape.shared_experts,
        mlp_layer_types=["sparse" if i in shape.moe_layers else "dense" for i in range(shape.num_layers)],
        rope_parameters={"rope_type": "default", "rope_theta": float(c.get("rope_theta", 500000.0)),
                         "mrope_section": [spatial, spatial, temporal]},
    )
    vision = dict(depth=shape.vision_depth, hidden_size=embed, num_heads=int(v.get("num_heads", 16)),
                  intermediate_size=int(embed * float(v.get("mlp_ratio", 4))),
                  patch_size=int(v.get("patch_size", 14)), in_channels=int(v.get("in_channels", 3)),
                  spatial_merge_size=int(c.get("spatial_conv_size", v.get("spatial_merge_size", 2))),
                  temporal_merge_size=int(c.get("temporal_conv_size", 2)),
                  hidden_act=v.get("hidden_act", "quick_gelu"))
    out = dict(text_config=text, vision_config=vision, tie_word_embeddings=text["tie_word_embeddings"])
    if "im_patch_id" in c:
        out["image_token_id"] = int(c["im_patch_id"])
    return out


class Ernie45VLRunner(LayerRunner):
    modeling_module = "transformers.models.ernie4_5_vl_moe.modeling_ernie4_5_vl_moe"
    layer_class_name = "Ernie4_5_VLMoeDecoderLayer"

    def text_config(self):
        return self.config.text_config

    def decoder_layers(self, model):
        return model.model.language_model.layers

    def final_norm_and_head(self, model):
        return model.model.language_model.norm, model.lm_head

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """Per-expert on-disk tensors -> fused in-memory experts, per modality; routers transposed."""
        e = self.adapter.shape.experts["text"]
        experts, rest = split_expert_tensors(tensors)
        state = {}
        for name, t in rest.items():
            if name == "mlp.gate.weight":
                state["mlp.text_moe.gate.weight"] = t.T.contiguous()
            elif name == "mlp.gate.weight_1":
                state["mlp.vision_moe.gate.weight"] = t.T.contiguous()
            elif name == "mlp.moe_statics.e_score_correction_bias":
                state["mlp.text_moe.gate.moe_statics.e_score_correction_bias"] = t[0:1].clone()
                state["mlp.vision_moe.gate.moe_statics.e_score_correction_bias"] = t[1:2].clone()
            else:
                state[name] = t
        if experts:
            for modality, ids in (("text", range(e)), ("vision", range(e, 2 * e))):
                gate_up, down = fuse_experts(experts, ids)
                state[f"mlp.{modality}_moe.experts.gate_up_proj"] = gate_up
                state[f"mlp.{modality}_moe.experts.down_proj"] = down
        return state

    def moe_blocks(self, layer_module):
        mlp = layer_module.mlp
        if not hasattr(mlp, "text_moe"):
            return []
        return [("text", mlp.text_moe.gate, mlp.text_moe.experts),
                ("vision", mlp.vision_moe.gate, mlp.vision_moe.experts)]

    def expert_module_name(self, layer: int, modality: str, expert: int, proj: str) -> str:
        k = expert + (self.adapter.shape.experts["text"] if modality == "vision" else 0)
        return f"model.layers.{layer}.mlp.experts.{k}.{proj}_proj"
