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



from ..errors import CheckpointError
from ..roles import Role
from .base import PROJ as _PROJ
from .base import Adapter, LayerRunner, MoEShape, NameRule, fuse_experts, mlp_shapes, split_expert_tensors

NATIVE = "ernie4_5_vl_moe"
REMOTE = "ernie4_5_moe_vl"

# Module names of the remote code in the -Thinking / pre-transformers -PT repos. Reconstructed: the
# config class is `Ernie4_5_VLMoEConfig` (model_type "ernie4_5_moe_vl") of configuration_ernie4_5_vl.py,
# the Baidu remote code that transformers copied into src/transformers/models/ernie4_5_vl/ during the port.
REMOTE_AUTO_MAP = {
    "AutoConfig": "configuration_ernie4_5_vl.Ernie4_5_VLMoEConfig",
    "AutoModel": "modeling_ernie4_5_vl.Ernie4_5_VLMoeForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_ernie4_5_vl.Ernie4_5_VLMoeForConditionalGeneration",
}

# baidu/ERNIE-4.5-VL-28B-A3B-PT, transformers-native flavour. Source: the defaults of
# transformers/models/ernie4_5_vl_moe/configuration_ernie4_5_vl_moe.py (documented as that checkpoint),
# with rope_parameters, mlp_layer_types and the text/vision split as written by
# convert_ernie4_5_vl_moe_to_hf.py (moe_layer_start_index 1, interval 1 -> layer 0 dense).
ERNIE45_VL_28B_NATIVE = {
    "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
    "model_type": "ernie4_5_vl_moe",
    "dtype": "bfloat16",
    "tie_word_embeddings": True,
    "image_token_id": 100295,
    "image_start_token_id": 101304,
    "image_end_token_id": 101305,
    "video_token_id": 103367,
    "video_start_token_id": 101306,
    "video_end_token_id": 101307,
    "text_config": {
        "model_type": "ernie4_5_vl_moe_text",
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
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [22, 22, 20]},
        "mlp_layer_types": ["dense"] + ["sparse"] * 27,
        "moe_intermediate_size": [1536, 512],
        "moe_k": 6,
        "moe_num_experts": 64,
        "moe_num_shared_experts": 2,
        "moe_norm_min": 1e-12,
        "router_aux_loss_coef": 0.001,
    },
    "vision_config": {
        "model_type": "ernie4_5_vl_moe_vision",
        "depth": 32,
        "hidden_size": 1280,
        "hidden_act": "quick_gelu",
        "intermediate_size": 5120,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_merge_size": 2,
        "rms_norm_eps": 1e-6,
    },
}

# baidu/ERNIE-4.5-VL-28B-A3B-Thinking, remote-code flavour (flat). Field names: the remote config class
# (configuration_ernie4_5_vl.py, see REMOTE_AUTO_MAP) and the keys convert_ernie4_5_vl_moe_to_hf.py reads
# from the Hub config.json (im_patch_id, moe_layer_*_index lists, vision mlp_ratio, spatial/temporal
# conv sizes); vLLM's ernie45_vl*.py reads pixel_hidden_size, freq_allocation, vision embed_dim (asserted
# equal to hidden_size). Values: the ERNIE repo's VL SFT defaults for this model (moe_layer_end_index
# [29, 28], moe_use_aux_free, dispatch mode, moe_capacity) and the 28B architecture above. pad/bos/eos
# 0/1/2 follow the tokenizer (<unk>, <s>, </s>).
ERNIE45_VL_28B_REMOTE = {
    "architectures": ["Ernie4_5_VLMoeForConditionalGeneration"],
    "auto_map": REMOTE_AUTO_MAP,
    "model_type": "ernie4_5_moe_vl",
    "torch_dtype": "bfloat16",
    "vocab_size": 103424,
    "hidden_size": 2560,
    "intermediate_size": 12288,
    "num_hidden_layers": 28,
    "num_attention_heads": 20,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "use_bias": False,
    "use_cache": True,
    "use_rmsnorm": True,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "rope_theta": 500000,
    "rope_3d": True,
    "freq_allocation": 20,
    "moe_num_experts": [64, 64],
    "moe_intermediate_size": [1536, 512],
    "moe_k": 6,
    "moe_num_shared_experts": 2,
    "moe_layer_start_index": [1, 1],
    "moe_layer_end_index": [29, 28],
    "moe_layer_interval": 1,
    "moe_use_aux_free": True,
    "moe_capacity": [128, 128, 128],
    "moe_multimodal_dispatch_use_allgather": "v2-alltoall-unpad-text",
    "im_patch_id": 100295,
    "max_text_id": 100295,
    "pixel_hidden_size": 1280,
    "spatial_conv_size": 2,
    "temporal_conv_size": 2,
    "use_temporal_conv": True,
    "vision_config": {
        "model_type": "DFNRope_vision_transformer",
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1280,
        "hidden_act": "quick_gelu",
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "attn_implementation": "eager",
    },
}

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


def ernie_decoder_layer_shapes(s: MoEShape, n: int, dense_intermediate: int) -> dict[str, tuple[int, ...]]:
    """What every ERNIE-4.5 decoder layer n holds besides its routed experts and routers (both families):
    norms, attention, and the dense MLP (a dense layer) or the shared experts (a MoE layer)."""
    h, d = s.hidden_size, s.head_dim
    q, kv = s.num_attention_heads * d, s.num_key_value_heads * d
    p = f"model.layers.{n}."
    out = {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
           p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
           p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q)}
    if n not in s.moe_layers:
        out.update(mlp_shapes(p + "mlp.", dense_intermediate, h))
    elif s.shared_experts:
        out.update(mlp_shapes(p + "mlp.shared_experts.", s.expert_intermediate["text"] * s.shared_experts, h))
    return out


_LINEAR_SUFFIX = r"(?:weight|bias|qweight|qzeros|scales|g_idx)"
_PACKED_SUFFIX = r"(?:weight|qweight|qzeros|scales|g_idx)"


def ernie_vllm_tensor_patterns(vision: bool) -> list[str]:
    """The tensor names vLLM's ERNIE-4.5 loaders map to a parameter (vLLM ernie45_vl_moe.py
    Ernie4_5_VLMoeForCausalLM.load_weights: stacked_params_mapping, expert_params_mapping,
    gate.weight -> text_experts_gate, gate.weight_1 -> vision_experts_gate; ernie45_moe.py for the
    text-only family): experts `mlp.experts.K.{gate,up,down}_proj.*`, attention, dense and shared MLP,
    routers only `mlp.gate.weight` (and `.weight_1` for the vision router), the routing bias, norms,
    embeddings, and (VL) the vision tower / resampler in float."""
    L = r"model\.layers\.(?P<n>\d+)\."
    out = [r"lm_head\.weight", r"model\.embed_tokens\.weight", r"model\.norm\.weight",
           L + r"(?:input_layernorm|post_attention_layernorm)\.weight",
           L + r"self_attn\.[qkvo]_proj\." + _LINEAR_SUFFIX,
           L + r"mlp\.(?:shared_experts\.)?(?:gate|up|down)_proj\." + _LINEAR_SUFFIX,
           L + r"mlp\.experts\.(?P<k>\d+)\.(?:gate|up|down)_proj\." + _PACKED_SUFFIX,
           L + (r"mlp\.gate\.weight(?:_1)?" if vision else r"mlp\.gate\.weight"),
           L + r"mlp\.moe_statics\.e_score_correction_bias"]
    if vision:
        out.append(r"model\.(?:vision_model|resampler_model)\..+\.(?:weight|bias)")
    return out


def _as_pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return int(v[0]), int(v[1])
    raise CheckpointError(f"config.json: {what} must be an int or a [text, vision] pair, got {v!r}")


class Ernie45VLAdapter(Adapter):
    family = "ernie45_vl"
    default_profile = "ernie45-vl"
    model_class_name = "Ernie4_5_VLMoeForConditionalGeneration"
    model_types = (NATIVE, REMOTE)
    REAL_CONFIGS = {"ERNIE-4.5-VL-28B-A3B": {"native": ERNIE45_VL_28B_NATIVE, "remote": ERNIE45_VL_28B_REMOTE}}
    gguf_unsupported = ("llama.cpp has no ERNIE-4.5-VL architecture (only the text ERNIE-4.5 MoE, arch ernie4_5-moe, "
                        "Ernie4_5_MoeForCausalLM)")

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
            raise CheckpointError(f"config.json: missing field {e.args[0]} for {c.get('model_type')}")

    def _expert_role(self, m) -> Role:
        k, e_text = int(m["k"]), self.shape.experts["text"]
        total = e_text + self.shape.experts["vision"]
        if k >= total:
            raise CheckpointError(f"tensor {m.string}: expert {k} beyond the {total} the config declares")
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

    def vllm_tensor_patterns(self) -> list[str]:
        return ernie_vllm_tensor_patterns(vision=True)

    def vllm_config_problems(self, config: dict) -> list[str]:
        """vLLM's ERNIE-4.5-VL code reads the remote-code config only: model_type ernie4_5_moe_vl, flat
        `moe_num_experts` [text, vision] with equal counts (asserted), `moe_layer_start_index` /
        `moe_layer_end_index` / `moe_intermediate_size` as [text, vision] lists, `spatial_conv_size`,
        `temporal_conv_size`, `pixel_hidden_size`, `im_patch_id`, and vision_config `embed_dim` (asserted
        equal to `hidden_size`), `depth`, `num_heads`, `mlp_ratio`; it registers the architecture
        Ernie4_5_VLMoeForConditionalGeneration. Source: vLLM ernie45_vl_moe.py Ernie4_5_VLMoeMoE.__init__,
        ernie45_vl.py Ernie4_5_VisionTransformer / Ernie4_5_VLMoeForConditionalGeneration.__init__."""
        c = config
        bad = []
        if c.get("model_type") != REMOTE:
            bad.append(f"model_type {c.get('model_type')!r} is the transformers-native flavour; vLLM reads the "
                       f"remote-code {REMOTE!r} config (keep the source's flavour)")
        else:
            for k in ("moe_num_experts", "moe_layer_start_index", "moe_intermediate_size"):
                if not (isinstance(c.get(k), list) and len(c[k]) == 2):
                    bad.append(f"{k} must be a [text, vision] list, got {c.get(k)!r}")
            if isinstance(c.get("moe_num_experts"), list) and len(set(c["moe_num_experts"])) != 1:
                bad.append(f"moe_num_experts {c['moe_num_experts']}: vLLM asserts equal text and vision counts")
            if "moe_layer_end_index" in c and not isinstance(c["moe_layer_end_index"], list):
                bad.append("moe_layer_end_index must be a [text, vision] list")
            for k in ("spatial_conv_size", "temporal_conv_size", "pixel_hidden_size", "im_patch_id"):
                if k not in c:
                    bad.append(f"{k} missing")
            vc = c.get("vision_config") or {}
            for k in ("embed_dim", "hidden_size", "depth", "num_heads", "mlp_ratio"):
                if k not in vc:
                    bad.append(f"vision_config.{k} missing")
            if "embed_dim" in vc and vc.get("hidden_size") != vc["embed_dim"]:
                bad.append("vision_config.hidden_size != embed_dim (asserted)")
        if "Ernie4_5_VLMoeForConditionalGeneration" not in (c.get("architectures") or []):
            bad.append(f"architectures {c.get('architectures')}: vLLM registers Ernie4_5_VLMoeForConditionalGeneration")
        return bad

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The Hub / `save_pretrained` layout of the module docstring (as quantkit.reference.tiny
        builds it); `tests/test_memory.py` checks it against real checkpoints' headers."""
        s = self.shape
        native = self.native_config()
        text, vision = native.text_config, native.vision_config
        h = s.hidden_size
        e_text, e_vis = s.experts["text"], s.experts["vision"]
        i_text, i_vis = s.expert_intermediate["text"], s.expert_intermediate["vision"]
        out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (s.vocab_size, h), "model.norm.weight": (h,)}
        if not getattr(text, "tie_word_embeddings", True) and not getattr(native, "tie_word_embeddings", True):
            out["lm_head.weight"] = (s.vocab_size, h)
        for n in range(s.num_layers):
            p = f"model.layers.{n}."
            out.update(ernie_decoder_layer_shapes(s, n, int(text.intermediate_size)))
            if n not in s.moe_layers:
                continue
            for k in range(e_text + e_vis):
                out.update(mlp_shapes(f"{p}mlp.experts.{k}.", i_text if k < e_text else i_vis, h))
            out.update({p + "mlp.gate.weight": (h, e_text), p + "mlp.gate.weight_1": (h, e_vis),
                        p + "mlp.moe_statics.e_score_correction_bias": (2, e_text)})
        hv, iv = int(vision.hidden_size), int(vision.intermediate_size)
        patch_in = int(vision.in_channels) * int(vision.patch_size) ** 2
        v = "model.vision_model."
        out[v + "patch_embed.proj.weight"] = (hv, patch_in)
        for b in range(int(vision.depth)):
            bp = f"{v}blocks.{b}."
            out.update({bp + "attn.qkv.weight": (3 * hv, hv), bp + "attn.qkv.bias": (3 * hv,),
                        bp + "attn.proj.weight": (hv, hv), bp + "attn.proj.bias": (hv,),
                        bp + "mlp.fc1.weight": (iv, hv), bp + "mlp.fc1.bias": (iv,),
                        bp + "mlp.fc2.weight": (hv, iv), bp + "mlp.fc2.bias": (hv,),
                        bp + "norm1.weight": (hv,), bp + "norm1.bias": (hv,),
                        bp + "norm2.weight": (hv,), bp + "norm2.bias": (hv,)})
        out.update({v + "ln.weight": (hv,), v + "ln.bias": (hv,)})
        sp = hv * int(vision.spatial_merge_size) ** 2
        tp = sp * int(vision.temporal_merge_size)
        r = "model.resampler_model."
        for name, first_in in (("spatial_linear", sp), ("temporal_linear", tp)):
            out.update({f"{r}{name}.0.weight": (sp, first_in), f"{r}{name}.0.bias": (sp,),
                        f"{r}{name}.2.weight": (sp, sp), f"{r}{name}.2.bias": (sp,),
                        f"{r}{name}.3.weight": (sp,), f"{r}{name}.3.bias": (sp,)})
        out.update({r + "mlp.weight": (h, sp), r + "mlp.bias": (h,), r + "after_norm.weight": (h,)})
        return out

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
