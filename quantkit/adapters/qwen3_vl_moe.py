"""Qwen3-VL MoE (e.g. Qwen/Qwen3-VL-30B-A3B-Instruct): `Qwen3VLMoeForConditionalGeneration`.

On disk (the Hub repos):
  model.language_model.layers.N.mlp.experts.gate_up_proj   ALL experts of the layer fused, [E, H, 2I],
                                                           stored [in, out]: gate = [..., :I], up = [..., I:]
  model.language_model.layers.N.mlp.experts.down_proj      [E, I, H] (no `.weight` suffix on either)
  model.language_model.layers.N.mlp.gate.weight            router [E, H] (softmax, top-k, always renormalised)
  model.language_model.layers.N.self_attn.{q,k,v,o}_proj.weight, self_attn.{q,k}_norm.weight, layer norms
  model.language_model.{embed_tokens,norm}.weight, lm_head.weight (untied)
  model.visual.{patch_embed.proj (Conv3d), pos_embed, blocks.N.*, merger.*, deepstack_merger_list.N.*}
Evidence for the fused, transposed experts: transformers conversion_mapping.py "qwen3_vl_moe"
(`Transpose(1, 2, check_dims=True)` on `mlp.experts.gate_up_proj` / `down_proj`: the Hub holds [E, H, 2I],
transformers 5 keeps [E, 2I, H] in memory); llama.cpp conversion/qwen3vl.py Qwen3VLMoeTextModel ("Qwen3VL
has transposed packed tensors ... Input gate/up: (n_expert=128, n_embd=2048, n_ff_exp=768)" after the
split of the [128, 2048, 1536] tensor; down permuted from [E, I, H]); vLLM qwen3_vl_moe.py
(`is_fused_checkpoint_transposed=True`, `is_3d_moe_weight = True`). transformers 5's own
`save_pretrained` writes the in-memory [E, 2I, H] / [E, H, I] instead; both are read (by shape).

The core plans and writes 2-D tensors, so `checkpoint_view` shows every fused tensor as per-expert
`...mlp.experts.K.{gate,up,down}_proj.weight` [out, in] (`expert_view.ExpertView`: a piece reads only its
expert's slice), the names a per-expert Qwen3-MoE checkpoint has and vLLM's loader takes for quantized
experts; `loadable_state` fuses them back for transformers. All tokens, text and image, go to the same
experts: one expert set, modality "text" in the roles.

DeepStack: the vision tower's features from blocks `deepstack_visual_indexes` are added to the hidden
states at the image positions after decoder layers 0..len-1; the layer runner replays that.
"""
from __future__ import annotations

import re
from dataclasses import replace

from ..errors import CheckpointError
from ..roles import Role
from .base import (PROJ, Adapter, LayerRunner, MoEShape, NameRule, Projector, ProjectorTensor, fuse_experts,
                   split_expert_tensors)
from .expert_view import ExpertView, fused_pieces
from .qwen3_moe import decoder_layer_shapes, decoder_rules, llama_cpp_problems, qwen3_moe_shape, vllm_decoder_patterns

LM = "model.language_model."
LAYERS = LM + "layers."
_FUSED = re.compile(r"model\.language_model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)")
_PER_EXPERT = re.compile(r"(model\.language_model\.layers\.\d+\.mlp\.experts\.)(\d+)\.(gate|up|down)_proj\.weight")

# Qwen/Qwen3-VL-30B-A3B-Instruct config.json as published (transformers 4.57 field names).
QWEN3_VL_30B_A3B = {
    "architectures": ["Qwen3VLMoeForConditionalGeneration"],
    "image_token_id": 151655,
    "model_type": "qwen3_vl_moe",
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "decoder_sparse_step": 1,
        "dtype": "bfloat16",
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 6144,
        "max_position_embeddings": 262144,
        "mlp_only_layers": [],
        "model_type": "qwen3_vl_moe_text",
        "moe_intermediate_size": 768,
        "norm_topk_prob": True,
        "num_attention_heads": 32,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "num_hidden_layers": 48,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000,
        "use_cache": True,
        "vocab_size": 151936,
    },
    "tie_word_embeddings": False,
    "video_token_id": 151656,
    "vision_config": {
        "deepstack_visual_indexes": [8, 16, 24],
        "depth": 27,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152,
        "in_channels": 3,
        "initializer_range": 0.02,
        "intermediate_size": 4304,
        "model_type": "qwen3_vl_moe",
        "num_heads": 16,
        "num_position_embeddings": 2304,
        "out_hidden_size": 2048,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "vision_end_token_id": 151653,
    "vision_start_token_id": 151652,
}

# vLLM qwen3_vl.py Qwen3VLForConditionalGeneration.hf_to_vllm_mapper
_VLLM_PREFIXES = (("model.visual.", "visual."), ("lm_head.", "language_model.lm_head."),
                  ("model.language_model.", "language_model.model."))


def vllm_name(module: str) -> str:
    for old, new in _VLLM_PREFIXES:
        if module.startswith(old):
            return new + module[len(old):]
    return module


class Qwen3VLMoeAdapter(Adapter):
    family = "qwen3_vl_moe"
    default_profile = "qwen3-vl-moe"
    model_class_name = "Qwen3VLMoeForConditionalGeneration"
    model_types = ("qwen3_vl_moe",)
    REAL_CONFIGS = {"Qwen3-VL-30B-A3B": {"hub": QWEN3_VL_30B_A3B}}
    # llama.cpp src/models/qwen3vlmoe.cpp + tools/mtmd (projector qwen3vl_merger); conversion/qwen3vl.py
    gguf_arch = "qwen3vlmoe"
    gguf_vocab = "gpt2"
    gguf_pre_tokenizer = "qwen2"

    @property
    def takes_pictures(self) -> bool:
        return True

    def text_fields(self) -> dict:
        t = dict(self.config.get("text_config") or {})
        rope = t.get("rope_parameters") or {**(t.get("rope_scaling") or {}), "rope_theta": t.get("rope_theta")}
        return {**t, "rope_parameters": {k: v for k, v in rope.items() if v is not None}}

    def _vision(self) -> dict:
        return self.config.get("vision_config") or {}

    def _moe_shape(self) -> MoEShape:
        if "text_config" not in self.config:
            raise CheckpointError("config.json: no text_config for qwen3_vl_moe")
        v = self._vision()
        return replace(qwen3_moe_shape(self.config["text_config"], "qwen3_vl_moe"),
                       vision_depth=int(v.get("depth", 0)), vision_hidden=int(v.get("hidden_size", 0)))

    def _expert_role(self, m) -> Role:
        k = int(m["k"])
        if k >= self.shape.experts["text"]:
            raise CheckpointError(f"tensor {m.string}: expert {k} beyond the {self.shape.experts['text']} "
                                  "the config declares")
        return Role("routed_expert", int(m["n"]), "text", k, PROJ[m["p"]])

    def _name_rules(self) -> list[NameRule]:
        return decoder_rules(r"model\.language_model\.layers\.", self._expert_role) + [
            # the stored fused tensors (what the files hold; the view shows them per expert)
            NameRule(r"model\.language_model\.layers\.(?P<n>\d+)\.mlp\.experts\.(?P<p>gate_up|down)_proj",
                     lambda m: Role("routed_expert", int(m["n"]), "text", proj=m["p"])),
            NameRule(r"model\.language_model\.norm\.weight", lambda m: Role("norm")),
            NameRule(r"model\.language_model\.embed_tokens\.weight", lambda m: Role("embedding")),
            NameRule(r"lm_head\.weight", lambda m: Role("lm_head")),
            NameRule(r"model\.visual\.(merger|deepstack_merger_list)\..+", lambda m: Role("resampler")),
            NameRule(r"model\.visual\..+", lambda m: Role("vision_tower")),
        ]

    # -- fused experts: the per-expert view and back ---------------------------------------------------
    def _pieces(self, info):
        m = _FUSED.fullmatch(info.name)
        if m is None:
            return None
        s = self.shape
        h, i, e = s.hidden_size, s.expert_intermediate["text"], s.experts["text"]
        fan_in, fan_out = (h, 2 * i) if m[2] == "gate_up_proj" else (i, h)
        shape = tuple(info.shape)
        hub, mem = (e, fan_in, fan_out), (e, fan_out, fan_in)  # the Hub stores [in, out] per expert
        if hub == mem:
            raise CheckpointError(f"tensor {info.name} {list(shape)}: hidden_size {h} equals the expert width, so "
                                  "the stored orientation cannot be told apart (transformers cannot either)")
        if shape not in (hub, mem):
            raise CheckpointError(f"tensor {info.name}: shape {list(shape)}, expected {list(hub)} (Hub layout) or "
                                  f"{list(mem)} for {e} experts, hidden {h}, expert width {i}")
        return fused_pieces(f"{LAYERS}{m[1]}.mlp.experts.", info.name, shape, h, stored_in_out=shape == hub)

    def checkpoint_view(self, ckpt):
        return ExpertView(ckpt, self._pieces)

    def loadable_state(self, state: dict) -> dict:
        """Per-expert weights -> transformers' in-memory fused [E, 2I, H] / [E, H, I] (its conversion
        leaves tensors of the in-memory shape as they are)."""
        by_layer: dict[str, dict] = {}
        out = {}
        for name, t in state.items():
            m = _PER_EXPERT.fullmatch(name)
            if m:
                by_layer.setdefault(m[1], {})[(int(m[2]), m[3])] = t
            else:
                out[name] = t
        for prefix, experts in by_layer.items():
            ids = sorted({k for k, _ in experts})
            if ids != list(range(self.shape.experts["text"])):
                raise CheckpointError(f"{prefix}*: experts {ids[:5]}..., expected 0..{self.shape.experts['text'] - 1}")
            out[prefix + "gate_up_proj"], out[prefix + "down_proj"] = fuse_experts(experts, ids)
        return out

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """The checkpoint as `checkpoint_view` shows it (experts per expert; on disk they are fused, see
        the module docstring), computed from the config alone."""
        s, t, v = self.shape, self.text_fields(), self._vision()
        h, e, i_e = s.hidden_size, s.experts["text"], s.expert_intermediate["text"]
        out: dict[str, tuple[int, ...]] = {LM + "embed_tokens.weight": (s.vocab_size, h), LM + "norm.weight": (h,)}
        if not self.config.get("tie_word_embeddings", False):
            out["lm_head.weight"] = (s.vocab_size, h)
        for n in range(s.num_layers):
            out.update(decoder_layer_shapes(s, LAYERS, n, int(t.get("intermediate_size", 0))))
            if n in s.moe_layers:
                for k in range(e):
                    p = f"{LAYERS}{n}.mlp.experts.{k}."
                    out.update({p + "gate_proj.weight": (i_e, h), p + "up_proj.weight": (i_e, h),
                                p + "down_proj.weight": (h, i_e)})
        hv, iv, p = int(v["hidden_size"]), int(v["intermediate_size"]), int(v.get("patch_size", 16))
        merged, out_h = hv * int(v.get("spatial_merge_size", 2)) ** 2, int(v.get("out_hidden_size", h))
        vis = "model.visual."
        out.update({vis + "patch_embed.proj.weight": (hv, int(v.get("in_channels", 3)), int(v.get("temporal_patch_size", 2)), p, p),
                    vis + "patch_embed.proj.bias": (hv,), vis + "pos_embed.weight": (int(v["num_position_embeddings"]), hv)})
        for b in range(int(v["depth"])):
            bp = f"{vis}blocks.{b}."
            out.update({bp + "norm1.weight": (hv,), bp + "norm1.bias": (hv,), bp + "norm2.weight": (hv,),
                        bp + "norm2.bias": (hv,), bp + "attn.qkv.weight": (3 * hv, hv), bp + "attn.qkv.bias": (3 * hv,),
                        bp + "attn.proj.weight": (hv, hv), bp + "attn.proj.bias": (hv,),
                        bp + "mlp.linear_fc1.weight": (iv, hv), bp + "mlp.linear_fc1.bias": (iv,),
                        bp + "mlp.linear_fc2.weight": (hv, iv), bp + "mlp.linear_fc2.bias": (hv,)})
        mergers = [(vis + "merger.", hv)] + [(f"{vis}deepstack_merger_list.{j}.", merged)
                                              for j in range(len(v.get("deepstack_visual_indexes", [])))]
        for mp, norm in mergers:
            out.update({mp + "norm.weight": (norm,), mp + "norm.bias": (norm,),
                        mp + "linear_fc1.weight": (merged, merged), mp + "linear_fc1.bias": (merged,),
                        mp + "linear_fc2.weight": (out_h, merged), mp + "linear_fc2.bias": (out_h,)})
        return out

    # -- vLLM: Qwen3VLMoeForConditionalGeneration (qwen3_vl_moe.py) -----------------------------------
    vllm_lm_prefix = "language_model."

    def vllm_unit(self, module: str, role: Role) -> tuple[str | None, str, str]:
        """Module names through vLLM's hf_to_vllm_mapper (`model.language_model.` -> `language_model.model.`,
        `model.visual.` -> `visual.`); q/k/v fused into `qkv_proj`, the experts of a layer into one FusedMoE
        `...mlp.experts`, the router `...mlp.gate` (the base rules)."""
        if role.kind in ("attention", "dense_mlp"):
            head, _, last = vllm_name(module).rpartition(".")
            fused = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj",
                     "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}.get(last, last)
            return f"{head}.{fused}", "linear", role.proj
        if role.kind in ("vision_tower", "resampler"):
            return vllm_name(module), "vision", ""
        return super().vllm_unit(module, role)

    def vllm_tensor_patterns(self) -> list[str]:
        """Checkpoint names vLLM's loader maps (before hf_to_vllm_mapper): the Qwen3-MoE decoder under
        `model.language_model.layers.` (per-expert names, and the fused 3-D expert tensors it also reads),
        embeddings, final norm, lm_head, and the vision tower / mergers (float: its weight names only)."""
        return [r"lm_head\.weight", r"model\.language_model\.embed_tokens\.weight", r"model\.language_model\.norm\.weight",
                *vllm_decoder_patterns(r"model\.language_model\.layers\."),
                r"model\.language_model\.layers\.(?P<n>\d+)\.mlp\.experts\.(?:gate_up_proj|down_proj)",
                r"model\.visual\..+\.(?:weight|bias)"]

    def vllm_config_problems(self, config: dict) -> list[str]:
        """vLLM registers Qwen3VLMoeForConditionalGeneration, reads the transformers config as it is
        (text_config for the Qwen3-MoE decoder, vision_config for Qwen3_VisionTransformer: depth, hidden_size,
        num_heads, patch_size, temporal_patch_size, spatial_merge_size, out_hidden_size, and
        deepstack_visual_indexes when present); the decoder's MLPs support silu only. Source: vLLM
        qwen3_vl_moe.py, qwen3_vl.py Qwen3_VisionTransformer, qwen3_moe.py."""
        bad = []
        if "Qwen3VLMoeForConditionalGeneration" not in (config.get("architectures") or []):
            bad.append(f"architectures {config.get('architectures')}: vLLM registers Qwen3VLMoeForConditionalGeneration")
        t, v = config.get("text_config") or {}, config.get("vision_config") or {}
        if t.get("hidden_act", "silu") != "silu":
            bad.append(f"text_config.hidden_act {t.get('hidden_act')!r}: vLLM's Qwen3-MoE decoder supports silu only")
        for k in ("depth", "hidden_size", "num_heads", "patch_size", "out_hidden_size"):
            if k not in v:
                bad.append(f"vision_config.{k} missing")
        if v.get("out_hidden_size") not in (None, t.get("hidden_size")):
            bad.append(f"vision_config.out_hidden_size {v.get('out_hidden_size')} != text hidden_size {t.get('hidden_size')}")
        return bad

    # -- llama.cpp ---------------------------------------------------------------------------------------
    def gguf_hparams(self) -> dict[str, object]:
        """conversion/qwen3vl.py Qwen3VLMoeTextModel: Qwen3-MoE's + M-RoPE sections (padded to 4) +
        the number of DeepStack layers."""
        t = self.text_fields()
        sections = list((t.get("rope_parameters") or {}).get("mrope_section") or [])
        out = {**super().gguf_hparams(), "expert_feed_forward_length": self.shape.expert_intermediate["text"]}
        if sections:
            out["rope_dimension_sections"] = (sections + [0, 0, 0, 0])[:4]
        out["num_deepstack_layers"] = len(self._vision().get("deepstack_visual_indexes", []))
        return out

    def gguf_problems(self) -> list[str]:
        t = self.text_fields()
        bad = llama_cpp_problems(self.shape, t, self.gguf_arch, True)
        rope = t.get("rope_parameters") or {}
        if rope.get("mrope_section") and not rope.get("mrope_interleaved", False):
            bad.append("mrope_interleaved is false; llama.cpp's qwen3vlmoe rotates interleaved M-RoPE sections")
        return bad

    def gguf_tensor_source(self, name: str) -> str:
        return "model." + name[len(LM):] if name.startswith(LM) else name

    def gguf_projector(self) -> Projector:
        """tools/mtmd's qwen3vl_merger projector as conversion/qwen3vl.py Qwen3VLVisionModel writes it:
        the Conv3d patch embedding as two Conv2d halves (`v.patch_embd.weight`, `.weight.1`), blocks and
        the learned positions through gguf's MMPROJ tensor map, the merger as `mm.0` / `mm.2` / `v.post_ln`,
        DeepStack mergers as `v.deepstack.{ViT block}.{norm,fc1,fc2}`."""
        try:
            return self._projector()
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"config.json: vision_config field {e} missing or invalid for the "
                                  "llama.cpp vision projector") from None

    def _projector(self) -> Projector:
        v, t = self._vision(), self.text_fields()
        depth, ds = int(v["depth"]), list(v.get("deepstack_visual_indexes", []))
        patch = int(v.get("patch_size", 16))
        tensors = [ProjectorTensor("model.visual.patch_embed.proj.weight", "v.patch_embd.weight", part=0, part_dim=2),
                   ProjectorTensor("model.visual.patch_embed.proj.weight", "v.patch_embd.weight.1", part=1, part_dim=2),
                   ProjectorTensor("model.visual.patch_embed.proj.bias", "v.patch_embd.bias"),
                   ProjectorTensor("model.visual.pos_embed.weight", tensor_map_name="visual.pos_embed.weight")]
        for b in range(depth):
            for leaf in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2"):
                for kind in ("weight", "bias"):
                    name = f"blocks.{b}.{leaf}.{kind}"
                    tensors.append(ProjectorTensor(f"model.visual.{name}", tensor_map_name=f"visual.{name}"))
        merger = {"linear_fc1": "mm.0", "linear_fc2": "mm.2", "norm": "v.post_ln"}
        for j, block in [(None, None)] + list(enumerate(ds)):
            src = "model.visual.merger." if j is None else f"model.visual.deepstack_merger_list.{j}."
            for leaf in ("norm", "linear_fc1", "linear_fc2"):
                dst = merger[leaf] if j is None else f"v.deepstack.{block}.{leaf.replace('linear_', '')}"
                for kind in ("weight", "bias"):
                    tensors.append(ProjectorTensor(f"{src}{leaf}.{kind}", f"{dst}.{kind}"))
        hparams = {"clip_has_vision_encoder": True, "vision_projection_dim": self.shape.hidden_size,
                   "vision_image_size": int(int(v["num_position_embeddings"]) ** 0.5 * patch),
                   "vision_patch_size": patch, "vision_embedding_length": int(v["hidden_size"]),
                   "vision_feed_forward_length": int(v["intermediate_size"]), "vision_block_count": depth,
                   "vision_head_count": int(v["num_heads"]), "vision_use_gelu": True,
                   "vision_spatial_merge_size": int(v.get("spatial_merge_size", 2)),
                   "vision_attention_layernorm_eps": float(t.get("rms_norm_eps", 1e-6)),
                   "vision_is_deepstack_layers": [b in ds for b in range(depth)]}
        return Projector("qwen3vl_merger", hparams, tuple(tensors), depth)

    def runner(self) -> "Qwen3VLMoeRunner":
        return Qwen3VLMoeRunner(self)

    def native_config(self):
        from transformers import Qwen3VLMoeConfig
        return Qwen3VLMoeConfig(**{k: v for k, v in self.config.items() if k != "quantization_config"})


_DEEPSTACK = ("visual_pos_masks", "deepstack_visual_embeds")


class Qwen3VLMoeRunner(LayerRunner):
    modeling_module = "transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe"
    layer_class_name = "Qwen3VLMoeTextDecoderLayer"
    layers_prefix = LAYERS

    def text_config(self):
        return self.config.text_config

    def decoder_layers(self, model):
        return model.model.language_model.layers

    def final_norm_and_head(self, model):
        return model.model.language_model.norm, model.lm_head

    def layer_state(self, tensors: dict, layer: int) -> dict:
        """Per-expert tensors (the view's) -> transformers' fused in-memory experts."""
        experts, state = split_expert_tensors(tensors)
        if experts:
            state["mlp.experts.gate_up_proj"], state["mlp.experts.down_proj"] = fuse_experts(
                experts, range(self.adapter.shape.experts["text"]))
        return state

    def watch_prefix(self, model):
        """The language model's DeepStack inputs (Qwen3VLMoeTextModel.forward's `visual_pos_masks` and
        `deepstack_visual_embeds`), recorded as the model calls it."""
        seen: dict = {}

        def hook(module, args, kwargs):
            for k in _DEEPSTACK:
                if kwargs.get(k) is not None:
                    seen[k] = kwargs[k]
        return [model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)], seen

    def run_layer(self, layer, n: int, hidden, kwargs: dict):
        """The layer, then (n < number of DeepStack levels) the visual features of level n added at the
        image positions (Qwen3VLMoeTextModel._deepstack_process)."""
        call = {k: v for k, v in kwargs.items() if k not in _DEEPSTACK}
        out = layer(hidden, **call)
        embeds, mask = kwargs.get("deepstack_visual_embeds"), kwargs.get("visual_pos_masks")
        if embeds is not None and mask is not None and n < len(embeds):
            out = out.clone()
            out[mask, :] = out[mask, :] + embeds[n].to(out.dtype)
        return out
