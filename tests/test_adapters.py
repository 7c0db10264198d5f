import pytest

from quantkit.adapters import adapter_for, real_config
from quantkit.adapters.ernie45_vl import Ernie45VLAdapter
from quantkit.checkpoint import Checkpoint
from quantkit.errors import CheckpointError
from quantkit.reference import tiny
from quantkit.roles import ALL_KINDS


def _roles(model_dir):
    ckpt = Checkpoint.open(model_dir)
    adapter = adapter_for(ckpt.config)
    return ckpt, adapter, {n: adapter.role_of(n) for n in ckpt.names()}


def test_every_tiny_vl_tensor_has_a_role(tiny_vl):
    ckpt, adapter, roles = _roles(tiny_vl)
    s = adapter.shape
    kinds = {r.kind for r in roles.values()}
    assert kinds == set(ALL_KINDS) - {"lm_head"}  # lm_head is tied to the embeddings
    for layer in s.moe_layers:
        for modality in ("text", "vision"):
            experts = {r.expert for r in roles.values() if r.kind == "routed_expert" and r.layer == layer
                       and r.modality == modality}
            assert experts == set(range(s.experts[modality]))
    # vision experts come after the text ones on disk and are narrower
    e = s.experts["text"]
    first_vision = roles[f"model.layers.{s.moe_layers[0]}.mlp.experts.{e}.up_proj.weight"]
    assert (first_vision.modality, first_vision.expert) == ("vision", 0)
    assert ckpt.info(f"model.layers.{s.moe_layers[0]}.mlp.experts.{e}.up_proj.weight").shape[0] == \
        s.expert_intermediate["vision"]
    layer = s.moe_layers[0]
    assert roles[f"model.layers.{layer}.mlp.gate.weight"].modality == "text"
    assert roles[f"model.layers.{layer}.mlp.gate.weight_1"].modality == "vision"
    assert roles[f"model.layers.{layer}.mlp.moe_statics.e_score_correction_bias"].kind == "router_bias"


def test_remote_code_flavour_reads_the_same_layout(tiny_vl):
    ckpt = Checkpoint.open(tiny_vl)
    native = adapter_for(ckpt.config)
    remote = adapter_for(tiny.remote_code_config(ckpt.config))
    assert remote.flavour == "remote" and native.flavour == "native"
    assert remote.shape == native.shape
    assert all(remote.role_of(n) == native.role_of(n) for n in ckpt.names())
    # and the native config it derives instantiates the same model
    cfg = remote.native_config()
    assert cfg.text_config.moe_intermediate_size == native.native_config().text_config.moe_intermediate_size
    assert cfg.text_config.mlp_layer_types == native.native_config().text_config.mlp_layer_types


@pytest.mark.parametrize("config", [real_config("ERNIE-4.5-VL-28B-A3B", "native"),
                                    real_config("ERNIE-4.5-VL-28B-A3B", "remote")],
                         ids=["native-PT", "remote-Thinking"])
def test_real_28b_configs_give_the_real_moe_shape(config):
    s = adapter_for(config).shape
    assert s.hidden_size == 2560 and s.num_layers == 28
    assert s.experts == {"text": 64, "vision": 64}
    assert s.expert_intermediate == {"text": 1536, "vision": 512}
    assert s.top_k == 6 and s.shared_experts == 2
    assert (s.num_attention_heads, s.num_key_value_heads, s.head_dim) == (20, 4, 128)
    assert s.vocab_size == 103424
    assert s.moe_layers[0] == 1 and len(s.moe_layers) == 27
    assert (s.vision_depth, s.vision_hidden) == (32, 1280)


def test_real_21b_text_config():
    s = adapter_for(real_config("ERNIE-4.5-21B-A3B")).shape
    assert s.experts == {"text": 64} and s.expert_intermediate == {"text": 1536}
    assert s.num_layers == 28 and s.moe_layers[0] == 1 and s.top_k == 6


def test_tiny_text_moe_roles(tiny_text):
    ckpt, adapter, roles = _roles(tiny_text)
    assert adapter.family == "ernie45_moe"
    kinds = {r.kind for r in roles.values()}
    assert {"routed_expert", "router", "router_bias", "attention", "embedding", "norm"} <= kinds
    assert all(r.modality == "text" for r in roles.values() if r.kind == "routed_expert")


def test_unknown_architecture_and_unmapped_tensor_are_errors(tiny_vl):
    with pytest.raises(CheckpointError, match="unsupported architecture model_type='llama'"):
        adapter_for({"model_type": "llama", "architectures": ["LlamaForCausalLM"]})
    adapter = adapter_for(Checkpoint.open(tiny_vl).config)
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.mystery.weight"):
        adapter.role_of("model.layers.1.mlp.mystery.weight")
    with pytest.raises(CheckpointError, match="beyond"):
        adapter.role_of("model.layers.1.mlp.experts.999.up_proj.weight")


def test_bad_remote_config_field_is_named():
    cfg = real_config("ERNIE-4.5-VL-28B-A3B", "remote")
    cfg["moe_num_experts"] = [64, 64, 64]
    with pytest.raises(CheckpointError, match="moe_num_experts"):
        Ernie45VLAdapter(cfg)
