"""quantkit package / verify-files: the model card, the naming convention, the checksums."""
import json
import shutil

import pytest
import yaml
from click.testing import CliRunner

from quantkit.cli import main
from quantkit.errors import UsageError, VariantCorrupt
from quantkit.manifest import MANIFEST, read_manifest, verify_files
from quantkit.publish import (CARD, PackageOptions, VariantName, package, read_card_metadata, render_index_card,
                              resolve_target, variant_name)
from quantkit.scheme import parse_scheme_label
from quantkit.verify import verify
from quantkit.version import QUANTKIT_VERSION

BASE = "test-org/tiny-ernie45-vl"


@pytest.fixture
def w4(tiny_vl_w4, tmp_path):
    """A private copy of the 4-bit RTN variant (packaging writes into it)."""
    return shutil.copytree(tiny_vl_w4, tmp_path / "tiny-vl-w4")


@pytest.fixture(scope="module")
def w2_rtn(tiny_vl, tmp_path_factory):
    from quantkit.api import QuantizeOptions, quantize
    return quantize(QuantizeOptions(model=str(tiny_vl), out=tmp_path_factory.mktemp("v") / "w2", bits=2, method="rtn"))


def _package(variant, **kw):
    kw.setdefault("base_model", BASE)
    kw.setdefault("license", "apache-2.0")
    kw.setdefault("run_verify", False)
    return package(PackageOptions(variant=variant, **kw))


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_card_metadata_is_what_the_hub_reads(w4):
    from huggingface_hub import ModelCard

    r = _package(w4)
    text = (w4 / CARD).read_text()
    meta = _front_matter(text)
    assert meta == r.metadata == read_card_metadata(w4 / CARD)
    for key in ("base_model", "base_model_relation", "license", "library_name", "pipeline_tag", "tags"):
        assert key in meta, key
    assert meta["base_model"] == BASE and meta["base_model_relation"] == "quantized"
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "image-text-to-text"
    assert {"moe", "gptq", "4-bit", "quantkit", "rtn"} <= set(meta["tags"])
    card = ModelCard.load(w4 / CARD)  # huggingface_hub's own parser agrees
    assert card.data.base_model == BASE and card.data.to_dict()["base_model_relation"] == "quantized"


def test_card_body_roles_calibration_runtimes_reproduce_license(w4):
    r = _package(w4)
    text = (w4 / CARD).read_text()
    assert r.name == VariantName("tiny-ernie45-vl", "GPTQ-Int4-g128-rtn")
    assert f"# {r.name.full}" in text
    assert f"made with quantkit {QUANTKIT_VERSION}" in text and "not an official release" in text and BASE in text
    manifest = read_manifest(w4)
    # every role of the manifest has its row; bits and group sizes are the manifest's
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    roles = {t["role"] for t in manifest["tensors"].values()}
    assert roles <= set(rows)
    assert "4-bit" in rows["routed_expert.text"] and "128 ×" in rows["routed_expert.text"]
    assert "8-bit" in rows["attention"] and "symmetric" in rows["attention"]
    assert "kept" in rows["router.text"] and "bit-identical" in rows["vision_tower"]
    assert "use a smaller group than their rule asks" in text  # the recorded fallbacks
    assert "None: round-to-nearest uses no calibration data." in text
    assert "No tradeoff was measured" in text
    assert "vLLM" in text and "spatial_conv_size" in text  # native config flavour: honest caveat
    assert "quantkit quantize " in text and "--profile ernie45-vl-w4 --method rtn" in text
    assert f"quantkit package {r.name.full} --base-model {BASE}" in text
    assert "## License and attribution" in text and "`apache-2.0`" in text and "test-org" in text
    assert "quantkit verify` was not run" in text


def test_two_bit_card_is_honest_about_runtimes(w2_rtn, tmp_path):
    v = shutil.copytree(w2_rtn, tmp_path / "w2")
    r = _package(v)
    text = (v / CARD).read_text()
    assert r.name.suffix == "GPTQ-Int2-g64-asym-rtn"
    assert "2-bit" in r.metadata["tags"]
    # vLLM >= 0.34 serves 2-bit asymmetric GPTQ experts with --quantization humming; this variant keeps the
    # native config flavour, which vLLM's ERNIE-4.5-VL code does not read: both said plainly
    assert "**vLLM: not with this config.**" in text and "Humming kernels" in text
    assert "vllm serve REPO --trust-remote-code --quantization humming" in text
    assert "**transformers `from_pretrained`: do not use it on this variant.**" in text
    assert "randomly initialised experts" in text and "--format compressed-tensors" in text
    assert "GPTQModel** (7.7) refuses this variant" in text
    assert "no ERNIE-4.5-VL" in text  # llama.cpp: not an option for the VL model, said plainly
    assert "cannot serve" not in text and "no 2-bit" not in text


def test_checksums_cover_the_card_and_verify_files_finds_damage(w4):
    _package(w4)
    files = read_manifest(w4)["files"]
    assert CARD in files and read_manifest(w4)["package"]["name"].endswith("GPTQ-Int4-g128-rtn")
    assert verify_files(w4).ok

    shard = sorted(w4.glob("model-*.safetensors"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    (w4 / "tokenizer_config.json").unlink()
    (w4 / "notes.txt").write_text("not part of the variant")
    (w4 / CARD).write_text((w4 / CARD).read_text() + "edited\n")
    report = verify_files(w4)
    kinds = {p.path: p.kind for p in report.problems}
    assert kinds == {shard.name: "sha256", "tokenizer_config.json": "missing", "notes.txt": "unlisted", CARD: "size"}
    assert "\n" not in report.summary()

    res = CliRunner().invoke(main, ["verify-files", str(w4)])
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    with pytest.raises(VariantCorrupt, match="does not match quantkit.json"):
        _package(w4)  # never writes a card over a damaged variant


def test_verify_files_cli_ok(w4):
    res = CliRunner().invoke(main, ["verify-files", str(w4)])
    assert res.exit_code == 0, res.output
    assert "every sha256 matches" in res.output


def test_report_table_goes_into_the_card(w4, tmp_path):
    rep = tmp_path / "report"
    rep.mkdir()
    (rep / "report.md").write_text("# Tradeoff\n\nsome text\n\n| variant | GB | KL |\n|---|---|---|\n"
                                   "| w4 | 14.2 | 0.012 |\n| w2 | 8.1 | 0.21 |\n\nmore text\n")
    _package(w4, report=rep)
    text = (w4 / CARD).read_text()
    assert "| w4 | 14.2 | 0.012 |\n| w2 | 8.1 | 0.21 |" in text
    assert "From `quantkit profile` (report.md" in text and "No tradeoff was measured" not in text
    assert read_manifest(w4)["package"]["report"]["source"] == "report.md"

    (rep / "report.md").unlink()
    (rep / "report.json").write_text(json.dumps({"variants": [{"name": "w4", "bytes": 100, "kl": 0.0123456},
                                                              {"name": "w2", "bytes": 50, "kl": 0.2}]}))
    _package(w4, report=rep)
    assert "| name | bytes | kl |" in (w4 / CARD).read_text() and "| w4 | 100 | 0.01235 |" in (w4 / CARD).read_text()

    (rep / "report.json").unlink()
    with pytest.raises(UsageError, match="no table in report.md"):
        _package(w4, report=rep)


def test_verdicts_are_recorded(w4, monkeypatch):
    verdicts = {"variant": str(w4), "integrity": {"ok": True, "checks": []},
                "runtimes": {"vllm": {"servable": False, "failed": ["vllm.config_flavour: native | flavour"],
                                      "checks": []},
                             "transformers": {"servable": True, "failed": [], "checks": []}}}
    _package(w4, verdicts=verdicts)
    text = (w4 / CARD).read_text()
    assert "Checked by `quantkit verify`" in text
    assert "| vllm | not servable | vllm.config_flavour: native \\| flavour |" in text
    assert "| transformers | servable | every check passed |" in text

    import quantkit.publish.packaging as pkg
    monkeypatch.setattr(pkg, "collect_verdicts", lambda variant: {"onnxruntime": {"verdict": "pass"}})
    _package(w4, run_verify=True)  # the hook that calls quantkit.verify
    assert "| onnxruntime | pass |" in (w4 / CARD).read_text()
    assert read_manifest(w4)["package"]["verdicts"] is True


def test_license_is_read_from_the_source_card(w4, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("---\nlicense: other\nlicense_name: ernie-license\n"
                                   "license_link: https://example.org/LICENSE\n---\n# base\n")
    m = json.loads((w4 / MANIFEST).read_text())
    m["source"]["id"] = str(src)
    (w4 / MANIFEST).write_text(json.dumps(m))
    r = package(PackageOptions(variant=w4, run_verify=False))
    assert r.metadata["license"] == "other" and r.metadata["license_name"] == "ernie-license"
    assert "base_model" not in r.metadata  # a local source without --base-model names none
    assert any("--base-model" in w for w in r.warnings)
    assert "https://example.org/LICENSE" in (w4 / CARD).read_text()


def test_package_cli(w4):
    res = CliRunner().invoke(main, ["package", str(w4), "--base-model", BASE, "--license", "mit", "--no-verify",
                                    "--repo", "test-org/{name}"])
    assert res.exit_code == 0, res.output
    assert "packaged" in res.output and "tiny-ernie45-vl-GPTQ-Int4-g128-rtn" in res.output
    assert read_manifest(w4)["package"]["repo"] == "test-org/tiny-ernie45-vl-GPTQ-Int4-g128-rtn"
    assert "vllm serve" not in (w4 / CARD).read_text() or "test-org/tiny" in (w4 / CARD).read_text()
    res = CliRunner().invoke(main, ["package", str(w4), "--base-model", "not a hub id", "--no-verify"])
    assert res.exit_code == 2 and "expected a Hub id" in res.stderr


def _manifest(label_counts: dict, source="baidu/ERNIE-4.5-VL-28B-A3B-PT") -> dict:
    tensors, i = {}, 0
    for (role, label), n in label_counts.items():
        for _ in range(n):
            tensors[f"t{i}.weight"] = {"role": role, "scheme": label}
            i += 1
    return {"source": {"id": source}, "tensors": tensors}


@pytest.mark.parametrize("labels,suffix", [
    ({("routed_expert.text", "gptq-w4g128"): 30, ("routed_expert.vision", "gptq-w4g32"): 10,
      ("attention", "gptq-w8g128"): 50}, "GPTQ-Int4-g128"),
    ({("routed_expert.text", "gptq-w2g64-asym"): 9, ("attention", "gptq-w4g128"): 9}, "GPTQ-Int2-g64-asym"),
    ({("routed_expert.text", "rtn-w8ch"): 3, ("norm", "keep"): 9}, "GPTQ-Int8-ch-rtn"),
    ({("routed_expert.text", "gptq-w3g128-actorder"): 3}, "GPTQ-Int3-g128-actorder"),
    ({("attention", "gptq-w4g128"): 3}, "GPTQ-Int4-g128"),  # no experts: the most common scheme
])
def test_naming_convention(labels, suffix):
    name = variant_name(_manifest(labels))
    assert name.suffix == suffix
    assert name.full == f"ERNIE-4.5-VL-28B-A3B-PT-{suffix}"


def test_naming_base_and_targets():
    m = _manifest({("routed_expert.text", "gptq-w4g128"): 1},
                  source="/cache/models--baidu--ERNIE-4.5-VL-28B-A3B-Thinking/snapshots/abc123")
    assert variant_name(m).base == "ERNIE-4.5-VL-28B-A3B-Thinking"
    assert variant_name(m, base="my model!!").base == "my-model"
    name = variant_name(m)
    assert resolve_target("org/{name}", None, name) == ("org/ERNIE-4.5-VL-28B-A3B-Thinking-GPTQ-Int4-g128", "main")
    assert resolve_target("org/x", "auto", name) == ("org/x", "GPTQ-Int4-g128")
    with pytest.raises(UsageError, match="placeholder"):
        resolve_target("org/{nope}", None, name)
    with pytest.raises(UsageError, match="ORG/NAME"):
        resolve_target("justaname", None, name)
    assert parse_scheme_label("gptq-w4ch").group_size == -1 and parse_scheme_label("keep") is None


def test_index_card_metadata():
    meta = {"base_model": BASE, "base_model_relation": "quantized", "license": "apache-2.0",
            "library_name": "transformers", "pipeline_tag": "image-text-to-text",
            "tags": ["moe", "gptq", "4-bit", "quantkit"]}
    text = render_index_card("test-org/x", meta, [
        {"branch": "GPTQ-Int4-g128", "name": "a-GPTQ-Int4-g128", "bits": 4, "group": "128", "sym": True,
         "method": "gptq", "bytes": 10},
        {"branch": "GPTQ-Int2-g64-asym", "name": "a-GPTQ-Int2-g64-asym", "bits": 2, "group": "64", "sym": False,
         "method": "gptq", "bytes": 5}])
    got = read_card_metadata(text)
    assert got["base_model_relation"] == "quantized" and got["base_model"] == BASE
    assert got["tags"] == ["moe", "gptq", "quantkit", "2-bit", "4-bit"]
    assert "`GPTQ-Int4-g128`" in text and "`GPTQ-Int2-g64-asym`" in text


def test_four_bit_remote_code_flavour_card_names_the_vllm_command(tmp_path):
    from quantkit.api import QuantizeOptions, quantize
    from quantkit.reference.tiny import build_tiny_vl

    src = build_tiny_vl(tmp_path / "tiny-remote", seed=0, flavour="remote")
    v = quantize(QuantizeOptions(model=str(src), out=tmp_path / "w4", bits=4, method="rtn"))
    r = _package(v, repo="test-org/tiny-vl-GPTQ", revision="auto")
    text = (v / CARD).read_text()
    assert f"vllm serve test-org/tiny-vl-GPTQ --revision {r.name.suffix} --trust-remote-code" in text
    assert "GPTQ Marlin MoE kernels (4 or 8 bits, symmetric; vLLM >= 0.32)" in text and "spatial_conv_size" not in text
    assert "--quantization humming" not in text.split("## Runtimes")[1].split("**transformers")[0]


def test_gptq_calibration_is_described(w4):
    m = json.loads((w4 / MANIFEST).read_text())
    m["calibration"] = {"samples": {"path": "/x/calibration/default", "sha256": "ab" * 32, "samples": 215,
                                    "tokens": {"text": 40976, "vision": 2640}},
                        "mode": "auto", "min_tokens": 64,
                        "coverage": {"1.text": {"modality": "text", "experts": 8, "under_threshold": [], "zero": []},
                                     "1.vision": {"modality": "vision", "experts": 8, "under_threshold": [1, 2],
                                                  "zero": [2]}}}
    (w4 / MANIFEST).write_text(json.dumps(m))
    _package(w4)
    text = (w4 / CARD).read_text()
    assert f"sha256 `{'ab' * 32}`" in text and "215 samples, 40976 text and 2640 vision tokens" in text
    assert "vision: 2 of 8 experts under 64 routed tokens (1 with none)" in text
    assert "quantkit calibrate test-org/tiny-ernie45-vl --out calib" in text and "--calib calib" in text


@pytest.fixture(scope="module")
def gguf_w4(tiny_text, tmp_path_factory):
    from quantkit.api import QuantizeOptions, quantize
    return quantize(QuantizeOptions(model=str(tiny_text), out=tmp_path_factory.mktemp("g") / "g4", bits=4,
                                    format="gguf", method="rtn"))


@pytest.mark.parametrize("fmt", ["gptq", "gguf"])
def test_verify_files_and_verify_judge_extra_files_alike(fmt, w4, request, tmp_path):
    """One ignore rule (quantkit.manifest): a download's `.cache/` is not part of the variant, any
    other unlisted file is, dot-files included; `verify-files` and `verify` agree on both."""
    v = w4 if fmt == "gptq" else shutil.copytree(request.getfixturevalue("gguf_w4"), tmp_path / "g4")
    (v / ".cache").mkdir()
    (v / ".cache" / "x").write_text("what `hf download --local-dir` keeps")
    assert verify_files(v).ok
    assert verify(v, runtimes=(), load=False).check("integrity.checksums").passed
    (v / ".notes").write_text("not part of the variant")
    assert [(p.path, p.kind) for p in verify_files(v).problems] == [(".notes", "unlisted")]
    check = verify(v, runtimes=(), load=False).check("integrity.checksums")
    assert check.status == "fail" and len(check.details) == 1 and ".notes" in check.details[0]
    res = CliRunner().invoke(main, ["verify-files", str(v)])
    assert res.exit_code == 2 and ".notes" in res.stderr and ".cache" not in res.stderr
