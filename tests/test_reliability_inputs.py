"""Issue 17, bad inputs answered in one line: a tampered variant is refused by quantkit.load (item 11),
profile values of the wrong type or range are refused naming file, rule and key (item 13), a finished
variant whose config.json was edited to other bits and a non-positive --max-shard-size end in one
clear line (item 16)."""
import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

import quantkit
from quantkit.cli import main
from quantkit.errors import ProfileError, UsageError, VariantCorrupt
from quantkit.manifest import MANIFEST
from quantkit.profiles import load_profile
from quantkit.roles import Role
from quantkit.units import parse_size


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture
def w4(tiny_vl_w4, tmp_path):
    return shutil.copytree(tiny_vl_w4, tmp_path / "w4")


# -- item 11: quantkit.load checks every file against quantkit.json ------------------------------

def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_load_refuses_a_tampered_shard_naming_it(w4):
    shard = sorted(w4.glob("model-*.safetensors"))[-1]
    _flip_last_byte(shard)  # same size, one bit of a weight changed
    with pytest.raises(VariantCorrupt, match=rf"{shard.name}: sha256 differs") as e:
        quantkit.load(w4)
    assert "\n" not in str(e.value) and "verify=False" in str(e.value)
    assert quantkit.load(w4, verify=False) is not None  # the escape hatch loads it unchecked


def test_load_refuses_a_missing_listed_file(w4):
    (w4 / "tokenizer_config.json").unlink()
    with pytest.raises(VariantCorrupt, match="tokenizer_config.json: missing"):
        quantkit.load(w4)


def test_load_ignores_unlisted_files_and_checkpoints_without_a_manifest(w4):
    (w4 / "notes.txt").write_text("not part of the variant, not read by load")
    assert quantkit.load(w4) is not None
    (w4 / MANIFEST).unlink()  # a GPTQ checkpoint made elsewhere: nothing to check against
    assert quantkit.load(w4) is not None


# -- item 16: config.json edited to other bits in a finished variant ------------------------------

@pytest.fixture
def edited_bits(w4):
    cfg = w4 / "config.json"
    text = cfg.read_text()
    assert '"bits": 4' in text
    cfg.write_text(text.replace('"bits": 4', '"bits": 2', 1))  # same size: only the sha256 tells
    return w4


def test_edited_bits_verify_files_one_line(edited_bits):
    res = CliRunner().invoke(main, ["verify-files", str(edited_bits)])
    assert res.exit_code == 2 and "Traceback" not in res.stderr and "internal error" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "config.json: sha256 differs" in last


def test_edited_bits_verify_reports_instead_of_crashing(edited_bits):
    res = CliRunner().invoke(main, ["verify", str(edited_bits)])
    out = res.output + res.stderr
    assert res.exit_code == 1, out  # a report: not servable
    assert "Traceback" not in out and "internal error" not in out
    assert "integrity.checksums: config.json: sha256 differs" in res.output
    res = CliRunner().invoke(main, ["verify", str(edited_bits), "--json"])
    report = json.loads(res.output)
    assert res.exit_code == 1 and report["integrity"]["ok"] is False


def test_edited_bits_load_one_line(edited_bits):
    with pytest.raises(VariantCorrupt, match="config.json: sha256 differs") as e:
        quantkit.load(edited_bits)
    assert "\n" not in str(e.value)
    with pytest.raises(VariantCorrupt, match=r"config.json: quantization_config reads .* as 2-bit") as e:
        quantkit.load(edited_bits, verify=False)  # unchecked, the reader still names the cause
    assert "\n" not in str(e.value)


# -- item 16: --max-shard-size must be positive ------------------------------------------------------

@pytest.mark.parametrize("size", ["0", "0B", "-1", "-2GB", "0.4B"])
def test_non_positive_shard_size_is_a_usage_error(size):
    with pytest.raises(UsageError, match=r"--max-shard-size .*: must be a positive size"):
        parse_size(size)


def test_parse_size_keeps_valid_sizes():
    assert parse_size("2GB") == 2_000_000_000 and parse_size("24GiB") == 24 * 2**30 and parse_size(1) == 1
    assert parse_size("0", positive=False) == 0
    with pytest.raises(UsageError, match="--limit abc: expected a size"):
        parse_size("abc", "--limit")


@pytest.mark.parametrize("size", ["0", "-5"])
def test_cli_quantize_with_non_positive_shard_size(tiny_vl, tmp_path, size):
    out = tmp_path / "nested" / "out"
    res = CliRunner().invoke(main, ["quantize", str(tiny_vl), "--out", str(out), "--bits", "4", "--method", "rtn",
                                    "--max-shard-size", size])
    assert res.exit_code == 2 and "--max-shard-size" in _one_error_line(res.stderr)
    assert not (tmp_path / "nested").exists()


# -- item 13: profile values are checked strictly ----------------------------------------------------

RULE = "family: ernie45_vl\nrules:\n  - role: routed_expert\n    bits: 4\n"


@pytest.mark.parametrize("extra,key,message", [
    ("    sym: 'false'\n", "sym", "must be true or false .*got the string 'false'"),
    ("    sym: 0\n", "sym", "must be true or false .*got the number 0"),
    ("    desc_act: 'yes'\n", "desc_act", "must be true or false"),
    ("    group_size: '128'\n", "group_size", "must be an integer, got the string '128'"),
    ("    group_size: 64.0\n", "group_size", "must be an integer, got the number 64.0"),
    ("    group_size: true\n", "group_size", "must be an integer, got the boolean true"),
    ("    group_size: 0\n", "group_size", "must be a positive number of columns or -1"),
    ("    group_size: -2\n", "group_size", "must be a positive number of columns or -1"),
    ("    method: 3\n", "method", "must be a string, got the number 3"),
    ("    method: awq\n", "method", "must be one of rtn, gptq"),
    ("    why: [a, b]\n", "why", "must be a string, got a list"),
    ("    name: 12\n", "name", "must be a string, got the number 12"),
])
def test_wrong_types_name_file_rule_and_key(tmp_path, extra, key, message):
    f = tmp_path / "p.yaml"
    f.write_text(RULE + extra)
    with pytest.raises(ProfileError, match=rf"rule 1: `{key}` {message}") as e:
        load_profile(f)
    assert str(e.value).startswith(f"{f} rule 1: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("body,message", [
    ("family: ernie45_vl\nrules:\n  - role: 5\n    bits: 4\n", "rule 1: `role` must be a role name or a list"),
    ("family: ernie45_vl\nrules:\n  - keep: true\n    role: routed_expert\n  - role: [router, 7]\n    keep: true\n",
     "rule 2: `role` must list role names .*got the number 7"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bits: '4'\n", "rule 1: `bits` must be an integer"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bits: 5.0\n", "rule 1: `bits` must be an integer"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    bits: 9\n", "rule 1: `bits` must be one of 2, 3, 4"),
    ("family: ernie45_vl\nrules:\n  - role: routed_expert\n    keep: 'true'\n", "rule 1: `keep` must be true or false"),
    ("family: [ernie45_vl]\nrules: []\n", "`family` must be a string, got a list"),
    ("family: ernie45_vl\nname: 3\nrules: []\n", "`name` must be a string"),
])
def test_wrong_types_of_roles_bits_keep_and_top_keys(tmp_path, body, message):
    f = tmp_path / "p.yaml"
    f.write_text(body)
    with pytest.raises(ProfileError, match=message) as e:
        load_profile(f)
    assert str(f) in str(e.value)


def test_yaml_booleans_still_work(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(RULE + "    sym: false\n    desc_act: no\n    group_size: -1\n")
    s = load_profile(f).scheme_for("x", Role("routed_expert", 1, "text", 0, "up"))
    assert (s.sym, s.desc_act, s.group_size) == (False, False, -1)
    assert yaml.safe_load("x: no")["x"] is False  # YAML 1.1 booleans are booleans


@pytest.mark.parametrize("extra", ["    sym: 'false'\n", "  - role: 5\n    bits: 4\n"])
def test_cli_plan_with_a_mistyped_profile(tiny_vl, tmp_path, extra):
    f = tmp_path / "p.yaml"
    f.write_text(RULE + extra)
    res = CliRunner().invoke(main, ["plan", str(tiny_vl), "--profile", str(f)])
    line = _one_error_line(res.stderr)
    assert res.exit_code == 2 and str(f) in line and "rule " in line
