"""`make bench` at a tiny size: the whole benchmark path (synthetic checkpoint, layer streaming with GPTQ,
batched vs loop, projection, summary) runs and writes a JSON whose figures are filled and consistent.
The real-shape benchmark is never run here (it takes minutes and ~7 GB of disk)."""
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside quantkit/, not installed

from bench import run_bench  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    run_bench.main(["--size", "smoke", "--inprocess", "--layers", "1,2", "--tokens", "512", "--seq-len", "256",
                    "--threads", "1", "--no-vit", "--no-dense", "--loop-experts", "4", "--matmul-n", "256",
                    "--out", str(tmp / "out"), "--cache-root", str(tmp / "cache"), "--no-keep-cache",
                    "--accuracy-report", str(tmp / "no-report.json")])
    return tmp


def test_writes_json_and_summary(smoke):
    report = json.loads((smoke / "out" / "smoke-moe1-2.json").read_text())
    assert report["schema"] == run_bench.SCHEMA
    for key in ("command", "machine", "settings", "checkpoint", "runs", "accuracy", "summary", "wall_seconds"):
        assert key in report, key
    md = (smoke / "out" / "summary-smoke.md").read_text()
    assert (smoke / "out" / "summary-smoke-moe1-2.md").read_text() == md
    for heading in ("## Per layer", "## Peak RSS vs layer count", "## Projection", "## Solver throughput",
                    "## Batched vs per-expert loop", "## Accuracy", "## Targets"):
        assert heading in md
    assert not (smoke / "cache").exists() or not any((smoke / "cache").glob("ernie45vl-*"))  # --no-keep-cache


def test_per_layer_figures_are_filled_and_add_up(smoke):
    report = json.loads((smoke / "out" / "smoke-moe1-2.json").read_text())
    assert set(report["runs"]) == {"moe1", "moe2"}
    assert [r["layer"] for r in report["runs"]["moe2"]["layers"]] == [1, 2]
    for run in report["runs"].values():
        assert run["calibration"]["tokens"] == 512
        assert run["calibration"]["text_tokens"] + run["calibration"]["vision_tokens"] == 512
        assert run["calibration"]["vision_tokens"] > 0
        assert run["peak_rss_bytes"] >= max(r["rss"]["peak_bytes"] for r in run["layers"]) > 0
        for r in run["layers"]:
            s = r["seconds"]
            parts = (s["load_layer"] + s["forward_hessian"] + s["read_weights"] + s["solve"] + s["pack"] + s["write"]
                     + s["free_and_carry"])
            assert abs(s["total"] - parts) <= 0.1 * s["total"] + 0.06, s
            assert 0 <= s["hessian_accumulate"] <= s["forward_hessian"] + 0.01
            assert 0 < s["solve_gptq"] <= s["solve"] + 0.01
            assert r["kind"] == "moe" and r["written_bytes"] > 0
            solve = r["solve"]
            assert solve["flops"] == sum(k["flops"] for k in solve["by_kind"].values()) > 0
            assert math.isclose(solve["gflops"], solve["flops"] / s["solve_gptq"] / 1e9, rel_tol=0.1)
            assert {"routed_expert.text.gate+up", "routed_expert.vision.down", "attention.k+q+v",
                    "shared_expert.gate+up", "shared_expert.down"} <= set(solve["by_kind"])
            assert r["machine_after"]["matmul_gflops"]["median"] > 0 and len(r["machine_after"]["loadavg"]) == 3
            assert 0 < r["cpu_share"] <= 1.5
            cfg = report["checkpoint"]
            assert cfg["layers"] == ["dense", "sparse", "sparse"]
            for modality, t in r["tokens_per_expert"].items():  # every routed token reaches moe_k experts
                assert math.isclose(t["mean"] * 8, t["modality_tokens"] * 2, abs_tol=8 * 0.05 + 1e-6), (modality, t)
                assert t["min"] <= t["median"] <= t["max"]


def test_scaling_projection_targets_consistent(smoke):
    report = json.loads((smoke / "out" / "smoke-moe1-2.json").read_text())
    s = report["summary"]
    assert s["scaling"]["layers"] == [1, 2]
    assert s["scaling"]["peak_rss_bytes"] == [report["runs"]["moe1"]["peak_rss_bytes"],
                                              report["runs"]["moe2"]["peak_rss_bytes"]]
    p = s["projection"]
    t = p["terms_seconds"]
    assert t["moe_layers"] == 27
    assert math.isclose(p["total_seconds"], t["T_prefix"] + t["T_dense"] + 27 * t["T_moe"] + t["T_finalize"],
                        rel_tol=1e-3, abs_tol=0.2)
    assert p["peak_rss_bytes"] == max(p["layer_peak_rss_bytes"], p["prefix_phase_bytes_est"])
    assert p["prefix_phase_bytes_est"] > 2 * p["prefix_resident_bytes"]
    assert p["prefix_resident_bytes"] > 0
    assert math.isclose(t["T_moe"], s["per_layer_seconds"]["moe"]["total"])
    loop = s["batched_vs_loop"]
    assert set(loop["kinds"]) == {"text.gate+up", "text.down", "vision.gate+up", "vision.down"}
    for k in loop["kinds"].values():
        assert k["batched_seconds"] > 0 and k["loop_seconds"] > 0 and k["experts"] == 4
        assert k["codes_differ_fraction"] < 0.01
    assert loop["layer_ratio_est"] > 0
    assert all(x["ratio"] and x["ratio"] > 0 for x in s["solver_vs_matmul"])
    for name in ("total_minutes", "peak_rss_gib", "solver_matmul_ratio", "batched_speedup", "calibration_tokens"):
        target = s["targets"][name]
        assert target["value"] is not None and target["met"] in (True, False), name
    assert s["targets"]["calibration_tokens"]["met"] is False  # 512 tokens: the smoke size says so
    assert report["accuracy"]["status"] == "missing" and "hook" in report["accuracy"]


def test_accuracy_hook_reads_the_profile_report(tmp_path):
    report = {"schema": "quantkit.profile/1", "created": "x", "reference": {"name": "ref"}, "variants": [
        {"name": "w4-gptq", "method": "gptq", "expert_bits": 4, "accuracy": {"kl": {"all": 0.01}, "moe_error_mean_isolated": 0.02}},
        {"name": "w4-rtn", "method": "rtn", "expert_bits": 4, "accuracy": {"kl": {"all": 0.04}, "moe_error_mean_isolated": 0.05}}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    acc = run_bench.accuracy_section(path)
    assert acc["status"] == "found" and len(acc["rows"]) == 2
    assert acc["gptq_vs_rtn"]["4"]["kl_gptq_over_rtn"] == 0.25
    assert acc["gptq_vs_rtn"]["4"]["moe_error_gptq_over_rtn"] == 0.4


def test_gptq_flop_count():
    f = run_bench.gptq_flops(64, 256, block=128, group=128)
    assert f["factor"] == round(256**3 / 3)  # one Cholesky
    assert f["bmm"] == 2 * 64 * 128 * 128  # the second block pulls in the first block's errors
    assert f["rank1"] == 2 * (64 * 128 * 127)  # two blocks, out w (w - 1) each
    assert f["group_solve"] == 64 * 128**2  # the second group's scale source
    assert f["total"] == f["factor"] + f["bmm"] + f["rank1"] + f["group_solve"] + f["elementwise"]
    g = run_bench.gptq_flops(64, 256, block=128, group=32)  # groups inside a block: J grows to the group end
    assert g["group_solve"] == 64 * sum((c + 32 - 128) ** 2 for c in range(128, 256, 32))
