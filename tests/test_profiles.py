import pytest

from quantkit.errors import ProfileError, UsageError
from quantkit.profiles import PROFILE_DIR, load_profile, profile_for_bits
from quantkit.roles import Role

EXPERT = Role("routed_expert", 1, "vision", 0, "down")


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_profiles_load_and_keep_the_sensitive_roles(path):
    prof = load_profile(path)
    for kind in ("router", "router_bias", "norm", "embedding", "lm_head"):
        assert prof.scheme_for("x", Role(kind)) is None, kind
    if prof.family == "ernie45_vl":
        assert prof.scheme_for("x", Role("vision_tower")) is None
        assert prof.scheme_for("x", Role("resampler")) is None
    assert prof.scheme_for("x", EXPERT) is not None


def test_bits_pick_the_family_profile_and_override_experts():
    assert profile_for_bits("ernie45-vl", 2).name == "ernie45-vl-w2"
    p3 = profile_for_bits("ernie45-vl", 3)
    assert p3.scheme_for("x", EXPERT).bits == 3
    assert p3.scheme_for("x", Role("attention", 1, proj="q")).bits == 8
    assert profile_for_bits("ernie45-vl", 5).scheme_for("x", EXPERT).bits == 5  # the format refuses what it cannot store
    with pytest.raises(UsageError, match="--bits 9"):
        profile_for_bits("ernie45-vl", 9)
    with_gs = load_profile("ernie45-vl-w4").with_overrides(group_size=32, method="rtn")
    assert with_gs.scheme_for("x", EXPERT).group_size == 32 and with_gs.scheme_for("x", EXPERT).method == "rtn"


def test_name_regex_rules_apply_in_order(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("family: ernie45_vl\nrules:\n"
                 "  - name: 'layers\\.1\\.'\n    keep: true\n"
                 "  - role: routed_expert.vision\n    bits: 8\n"
                 "  - role: routed_expert\n    bits: 2\n    group_size: 32\n    sym: false\n")
    p = load_profile(f)
    assert p.scheme_for("model.layers.1.mlp.experts.9.up_proj.weight", EXPERT) is None
    assert p.scheme_for("model.layers.2.mlp.experts.9.up_proj.weight", EXPERT).bits == 8
    text = Role("routed_expert", 2, "text", 0, "up")
    s = p.scheme_for("model.layers.2.mlp.experts.0.up_proj.weight", text)
    assert (s.bits, s.group_size, s.sym) == (2, 32, False)


@pytest.mark.parametrize("body,message", [
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bitz: 4\n", "unknown key 'bitz'"),
    ("family: ernie45_vl\nrules:\n  - role: expertz\n    bits: 4\n", "unknown role 'expertz'"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bits: 9\n", "`bits` must be one of"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    keep: true\n    bits: 4\n", "both keep and set bits"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    method: awq\n    bits: 4\n", "`method` must be one of"),
    ("family: ernie45_vl\nrulez: []\n", "unknown key 'rulez'"),
    ("family: ernie45_vl\nrules: [\n", "invalid YAML"),
])
def test_bad_profiles_name_the_problem(tmp_path, body, message):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(ProfileError, match=message) as e:
        load_profile(f)
    assert str(f) in str(e.value)


def test_unknown_profile_name():
    with pytest.raises(ProfileError, match="shipped: .*ernie45-vl-w4"):
        load_profile("nope-w4")
