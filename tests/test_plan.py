import pytest

from quantkit.adapters import adapter_for
from quantkit.checkpoint import Checkpoint
from quantkit.errors import PlanRefused, ProfileError
from quantkit.plan import build_plan
from quantkit.profiles import load_profile, profile_for_bits
from quantkit.formats.gptq.config import build_quantization_config, module_scheme


def _plan(model_dir, profile, **kw):
    ckpt = Checkpoint.open(model_dir)
    return build_plan(ckpt, adapter_for(ckpt.config), profile, **kw)


def test_w4_plan_quantizes_every_expert_and_keeps_the_rest(tiny_vl):
    plan = _plan(tiny_vl, profile_for_bits("ernie45-vl", 4))
    experts = [e for e in plan.entries if e.role.kind == "routed_expert"]
    assert experts and all(e.quantized and e.scheme.bits == 4 for e in experts)
    assert {e.role.modality for e in experts} == {"text", "vision"}
    for e in plan.entries:
        if e.role.kind in ("router", "router_bias", "vision_tower", "resampler", "embedding", "norm"):
            assert not e.quantized, e.name
    by_role = plan.by_role()
    assert by_role["routed_expert.text"]["planned_bytes"] < by_role["routed_expert.text"]["source_bytes"] / 4


def test_group_size_fallback_is_recorded_per_tensor(tiny_vl):
    plan = _plan(tiny_vl, profile_for_bits("ernie45-vl", 4))  # group 128
    narrow = [e for e in plan.quantized() if e.shape[1] % 128]
    assert narrow, "the tiny model must have layers narrower than 128 columns"
    for e in narrow:
        assert e.fallback and "does not divide" in e.fallback
        assert e.shape[1] % e.scheme.effective_group_size(e.shape[1]) == 0
        assert any(e.name in n for n in plan.notes)
    # the quantization_config describes every module exactly as planned
    qcfg = build_quantization_config(plan)
    for e in plan.entries:
        if e.quantized:
            s = module_scheme(qcfg, e.module)
            assert (s.bits, s.group_size, s.sym) == (e.scheme.bits, e.scheme.group_size, e.scheme.sym), e.name
        elif e.name.endswith(".weight") and len(e.shape) == 2:
            assert module_scheme(qcfg, e.module) is None, e.name


def test_mixed_bits_in_a_fused_group_is_refused_unless_forced(tiny_vl, tmp_path):
    f = tmp_path / "mixed.yaml"
    f.write_text("family: ernie45_vl\nrules:\n"
                 "  - role: routed_expert\n    name: 'down_proj'\n    bits: 8\n"
                 "  - role: routed_expert\n    bits: 4\n")
    with pytest.raises(PlanRefused, match="fused group layers.1.experts.text mixes"):
        _plan(tiny_vl, load_profile(f))
    plan = _plan(tiny_vl, load_profile(f), force=True)
    assert any(n.startswith("forced:") for n in plan.notes)
    qkv = tmp_path / "qkv.yaml"
    qkv.write_text("family: ernie45_vl\nrules:\n  - role: attention\n    name: 'q_proj'\n    bits: 4\n"
                   "  - role: attention\n    bits: 8\n")
    with pytest.raises(PlanRefused, match="qkv mixes"):
        _plan(tiny_vl, load_profile(qkv))


def test_quantizing_a_router_or_vision_tower_is_refused(tiny_vl, tmp_path):
    for role in ("router", "vision_tower"):
        f = tmp_path / f"{role}.yaml"
        f.write_text(f"family: ernie45_vl\nrules:\n  - role: {role}\n    bits: 8\n")
        with pytest.raises(PlanRefused, match=f"quantized {role}"):
            _plan(tiny_vl, load_profile(f))


def test_profile_of_another_family_is_refused(tiny_vl):
    with pytest.raises(ProfileError, match="is for ernie45_moe"):
        _plan(tiny_vl, load_profile("ernie45-moe-w4"))


def test_predicted_bytes_add_up(tiny_vl):
    plan = _plan(tiny_vl, profile_for_bits("ernie45-vl", 8))
    kept = sum(e.source_bytes for e in plan.entries if not e.quantized)
    q = 0
    for e in plan.quantized():
        out_f, in_f = e.shape
        g = e.scheme.effective_group_size(in_f)
        q += in_f * out_f * 8 // 8 + (in_f // g) * out_f * 8 // 8 + (in_f // g) * out_f * 2 + in_f * 4
    assert plan.predicted_bytes == kept + q
