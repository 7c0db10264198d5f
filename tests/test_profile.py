"""`quantkit profile` on the trained reference model: real GPTQ and RTN variants, real runs.

Acceptance (issue 4): more bits stay closer to the reference (KL and task accuracy), GPTQ beats RTN at
2 and 4 bits, byte counts equal the files, and the report (json, md, png) is complete and readable.
"""
import json

import pytest
from click.testing import CliRunner
from PIL import Image

from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, quantize
from quantkit.cli import main
from quantkit.profile import ProfileOptions, profile
from quantkit.profile.report import SCHEMA, pareto_front
from quantkit.reference import task
from quantkit.reference.trained import TRAINED_DIR

EVAL_PER_KIND = 20  # 180 held-out items: what the test can afford; `make profile` uses 40


@pytest.fixture(scope="session")
def trained_variants(tmp_path_factory):
    """The trained reference calibrated once on the task's calibration split (32 per kind, as `make
    profile-vl`; with 16, GPTQ 2-bit recovered 45 % of RTN 2-bit's loss, with 32 64 %), then GPTQ at
    8/4/2 bits and RTN at 4/2 bits with the shipped profiles."""
    root = tmp_path_factory.mktemp("trained-variants")
    samples = task.write_jsonl(task.generate("calib", 32), root / "calib-set" / "samples.jsonl", answers="half")
    calib, _ = calibrate(CalibrateOptions(model=str(TRAINED_DIR), out=root / "calib", samples=str(samples)))
    out = {}
    for bits in (8, 4, 2):
        out[f"gptq{bits}"] = quantize(QuantizeOptions(model=str(TRAINED_DIR), out=root / f"trained-w{bits}-gptq",
                                                      bits=bits, calib=calib))
    for bits in (4, 2):
        out[f"rtn{bits}"] = quantize(QuantizeOptions(model=str(TRAINED_DIR), out=root / f"trained-w{bits}-rtn",
                                                     bits=bits, method="rtn"))
    return out


@pytest.fixture(scope="session")
def report(trained_variants, tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "report"
    result = profile(ProfileOptions(reference=str(TRAINED_DIR), variants=[str(p) for p in trained_variants.values()],
                                    out=out, eval_items_per_kind=EVAL_PER_KIND))
    return out, result


def _by_key(report, variants):
    names = {p.name: key for key, p in variants.items()}
    return {names[v["name"]]: v for v in report["variants"]}


def test_more_bits_stay_closer_to_the_reference(report, trained_variants):
    _, result = report
    v = _by_key(result, trained_variants)
    kl = {k: v[k]["accuracy"]["kl"]["all"] for k in v}
    acc = {k: v[k]["accuracy"]["task"]["accuracy"] for k in v}
    ref_acc = result["reference"]["accuracy"]["task"]["accuracy"]
    print({k: (f"{kl[k]:.2e}", acc[k], v[k]["accuracy"]["task"]["flips"]) for k in v}, "reference", ref_acc)
    assert kl["gptq8"] < kl["gptq4"] < kl["gptq2"]
    for split in ("text", "image"):
        assert v["gptq8"]["accuracy"]["kl"][split] < v["gptq4"]["accuracy"]["kl"][split] < v["gptq2"]["accuracy"]["kl"][split]
    gap = {k: abs(ref_acc - acc[k]) for k in acc}
    assert gap["gptq8"] <= gap["gptq4"] < gap["gptq2"]
    flips = {k: v[k]["accuracy"]["task"]["flips"] for k in v}  # items answered differently from the reference
    assert flips["gptq8"] <= flips["gptq4"] < flips["gptq2"]
    assert v["gptq8"]["accuracy"]["top1"]["all"] >= v["gptq4"]["accuracy"]["top1"]["all"] > v["gptq2"]["accuracy"]["top1"]["all"]
    assert v["gptq8"]["accuracy"]["router_mean_overlap"] >= v["gptq2"]["accuracy"]["router_mean_overlap"]
    for stat in ("moe_error_mean_isolated", "moe_error_median_isolated"):
        assert v["gptq8"]["accuracy"][stat] < v["gptq4"]["accuracy"][stat] < v["gptq2"]["accuracy"][stat]


def test_reference_reacts_to_low_bits_as_real_models_do(report, trained_variants):
    """Issue 15: full precision >= 90 %, round-to-nearest 4-bit loses <= 3 points, 2-bit >= 15, and
    GPTQ 2-bit recovers at least half of that (the trained reference's memorised facts are what low
    bits lose first; ``quantkit/reference/trained.py``)."""
    _, result = report
    v = _by_key(result, trained_variants)
    acc = {k: v[k]["accuracy"]["task"]["accuracy"] for k in v}
    fp = result["reference"]["accuracy"]["task"]["accuracy"]
    print("task accuracy", fp, acc)
    assert fp >= 0.90
    assert fp - acc["rtn4"] <= 0.03
    assert fp - acc["rtn2"] >= 0.15
    assert acc["gptq2"] - acc["rtn2"] >= (fp - acc["rtn2"]) / 2


@pytest.mark.parametrize("bits", [4, 2])
def test_gptq_beats_rtn(report, trained_variants, bits):
    _, result = report
    v = _by_key(result, trained_variants)
    g, r = v[f"gptq{bits}"]["accuracy"], v[f"rtn{bits}"]["accuracy"]
    print(f"{bits}-bit KL gptq {g['kl']['all']:.3e} rtn {r['kl']['all']:.3e}; "
          f"task gptq {g['task']['accuracy']:.3f} rtn {r['task']['accuracy']:.3f}")
    assert g["kl"]["all"] < r["kl"]["all"] or g["task"]["accuracy"] > r["task"]["accuracy"]
    assert g["moe_error_median_isolated"] < r["moe_error_median_isolated"]


def test_byte_counts_equal_the_files(report, trained_variants):
    _, result = report
    for entry in [result["reference"], *result["variants"]]:
        m = entry["memory"]
        from pathlib import Path
        shards = {p.name: p.stat().st_size for p in Path(entry["path"]).glob("*.safetensors")}
        assert m["files"] == shards and m["file_bytes"] == sum(shards.values())
        assert m["tensor_bytes"] + m["header_bytes"] == m["file_bytes"]
        assert sum(r["bytes"] for r in m["by_role"].values()) == m["tensor_bytes"]
        for c in result["contexts"]:
            assert m["vram"][str(c)]["weights"] == m["tensor_bytes"]
    v = _by_key(result, trained_variants)
    sizes = [v[k]["memory"]["file_bytes"] for k in ("gptq8", "gptq4", "gptq2")]
    assert sizes[0] > sizes[1] > sizes[2] and sizes[0] < result["reference"]["memory"]["file_bytes"]
    assert v["gptq4"]["memory"]["file_bytes"] == v["rtn4"]["memory"]["file_bytes"]  # same layout, other numbers


def test_report_files_are_complete(report, trained_variants):
    out, result = report
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["schema"] == SCHEMA == result["schema"]
    assert len(on_disk["variants"]) == len(trained_variants)
    v = on_disk["variants"][0]["accuracy"]
    assert set(v["router"]) == set(v["moe_error"]) == {f"{n}.{m}" for n in (1, 2, 3) for m in ("text", "vision")}
    assert on_disk["eval"]["items"] == len(task.generate("eval", EVAL_PER_KIND)) and (out / "eval" / "eval.jsonl").is_file()
    assert on_disk["eval"]["positions"]["image"] > 0 and on_disk["eval"]["positions"]["text"] > 0
    assert on_disk["pareto"]["kl"] and set(on_disk["pareto"]["kl"]) <= {p.name for p in trained_variants.values()}
    md = (out / "report.md").read_text()
    first_table = md.split("\n\n")[1]
    for p in trained_variants.values():
        assert f"| {p.name} |" in first_table
    assert "ERNIE-4.5-VL-28B-A3B" in md and "VRAM" in md
    with Image.open(out / "tradeoff.png") as img:
        assert img.format == "PNG" and img.size[0] >= 1000 and img.size[1] >= 500
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50  # a drawn plot, not a blank canvas


def test_pareto_front():
    pts = [("a", 10, 0.5), ("b", 20, 0.1), ("c", 30, 0.2), ("d", 5, 0.9), ("e", 20, 0.3)]
    assert pareto_front(pts) == ["a", "b", "d"]


def test_cli_profile(trained_variants, tmp_path):
    out = tmp_path / "cli"
    variant = str(trained_variants["rtn4"])
    result = CliRunner().invoke(main, ["profile", str(TRAINED_DIR), variant, "--items-per-kind", "2",
                                       "--context", "2048,8k", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report written" in result.output
    data = json.loads((out / "report.json").read_text())
    assert data["contexts"] == [2048, 8000]
    # one argument: the reference is the source named in the variant's quantkit.json; --eval reads a
    # samples JSONL (here the one the first run wrote)
    eval_file = out / "eval" / "eval.jsonl"
    result = CliRunner().invoke(main, ["profile", variant, "--eval", str(eval_file), "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "one" / "report.json").read_text())
    assert again["reference"]["path"] == str(TRAINED_DIR)
    assert again["eval"]["source"] == str(eval_file)
    assert again["eval"]["items"] == data["eval"]["items"] == len(task.generate("eval", 2))
    assert again["variants"][0]["accuracy"]["kl"] == data["variants"][0]["accuracy"]["kl"]
    bad = CliRunner().invoke(main, ["profile", str(TRAINED_DIR), str(TRAINED_DIR), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a quantkit/GPTQ variant" in bad.output


def test_profile_of_a_text_only_model_and_its_gguf_variants(tiny_text, tiny_text_gguf, tmp_path):
    """Text-only references profile too (the text reference of `make profile`): the tokenizer is the
    "processor", MoE blocks return a tensor (not a tuple), every position is a text position."""
    lines = [json.dumps({"id": f"kv-{i}", "kind": "fact", "lang": "en",
                         "messages": [{"role": "user", "content": f"{100 + i}"},
                                      {"role": "assistant", "content": f"{731200 + 7 * i}"}]}) for i in range(6)]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("\n".join(lines) + "\n")
    rep = profile(ProfileOptions(reference=str(tiny_text), variants=[str(tiny_text_gguf["w4"]), str(tiny_text_gguf["w2"])],
                                 out=tmp_path / "report", eval=str(eval_file), cuda="off"))
    assert rep["eval"]["items"] == 6 and rep["eval"]["positions"]["image"] == 0
    kl = {v["expert_bits"]: v["accuracy"]["kl"]["all"] for v in rep["variants"]}
    assert 0 < kl[4] < kl[2]
    assert {v["series"] for v in rep["variants"]} == {"gptq"}
    assert set(rep["variants"][0]["accuracy"]["moe_error"]) == {"1.text", "2.text"}
    assert (tmp_path / "report" / "tradeoff.png").stat().st_size > 10_000
