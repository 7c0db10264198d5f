"""`--target-size` / `--vram` (quantkit.allocate): exact knapsack, refusals, units per runtime, the
written variant, and the KL at the size of uniform 3-bit experts on the trained reference."""
from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from quantkit.allocate import knapsack, real_model_choices
from quantkit.api import CalibrateOptions, QuantizeOptions, calibrate, make_plan, quantize
from quantkit.errors import PlanRefused, UsageError
from quantkit.format import get_format
from quantkit.reference.trained import TRAINED_DIR

TRAINED = str(TRAINED_DIR)


def test_knapsack_is_exact_against_brute_force():
    rng = random.Random(0)
    for _ in range(30):
        options = [[(rng.randint(1, 40), rng.random() * 10) for _ in range(rng.randint(1, 4))] for _ in range(5)]
        capacity = rng.randint(20, 150)
        best = None
        for pick in itertools.product(*[range(len(o)) for o in options]):
            b = sum(options[i][j][0] for i, j in enumerate(pick))
            e = sum(options[i][j][1] for i, j in enumerate(pick))
            if b <= capacity and (best is None or e < best - 1e-12):
                best = e
        got = knapsack(options, capacity)
        if best is None:
            assert got is None
            continue
        choice, err = got
        assert sum(options[i][c][0] for i, c in enumerate(choice)) <= capacity
        assert err == pytest.approx(best)
        assert sum(options[i][c][1] for i, c in enumerate(choice)) == pytest.approx(best)


@pytest.fixture(scope="module")
def trained_calib(tmp_path_factory):
    from quantkit.reference import task
    root = tmp_path_factory.mktemp("alloc")
    samples = root / "samples.jsonl"
    task.main(["calib", "32", str(samples), "--answers", "half"])
    calib, _ = calibrate(CalibrateOptions(model=TRAINED, out=root / "calib", samples=str(samples)))
    return root, calib


def _uniform_bytes(bits: int, **kw) -> int:
    return make_plan(QuantizeOptions(model=TRAINED, out=Path("."), bits=bits, **kw))[2].predicted_bytes


def test_refuses_a_budget_below_the_smallest_width(trained_calib):
    _, calib = trained_calib
    smallest = _uniform_bytes(2, profile="ernie45-vl-w4")  # the base profile with the narrowest experts
    with pytest.raises(PlanRefused, match=f"smallest reachable size is .*{smallest} bytes"):
        make_plan(QuantizeOptions(model=TRAINED, out=Path("."), calib=calib, target_size=smallest - 1))
    plan = make_plan(QuantizeOptions(model=TRAINED, out=Path("."), calib=calib, target_size=smallest))[2]
    assert plan.predicted_bytes == smallest
    with pytest.raises(UsageError, match="--calib"):
        make_plan(QuantizeOptions(model=TRAINED, out=Path("."), target_size="1GB"))
    with pytest.raises(UsageError, match="--runtime llama.cpp"):
        make_plan(QuantizeOptions(model=TRAINED, out=Path("."), calib=calib, target_size="1GB", runtime="llama.cpp"))


def test_vram_budget_is_the_serving_estimate(trained_calib):
    _, calib = trained_calib
    plan = make_plan(QuantizeOptions(model=TRAINED, out=Path("."), calib=calib, vram="1GiB", context=1024))[2]
    v = plan.allocation.vram
    assert v["weights"] == plan.predicted_bytes and v["total"] <= 2**30


def test_allocated_variant_at_uniform_w3_size(trained_calib):
    """vLLM units (one scheme per FusedMoE layer and modality), written bytes == predicted, verify
    --runtime vllm passes, and mean KL against uniform 3-bit at the same byte size."""
    from quantkit.profile import ProfileOptions
    from quantkit.profile import profile as run_profile
    from quantkit.verify import verify

    root, calib = trained_calib
    # group 64: the reference's vision experts are 64 wide, and vLLM wants one group size per FusedMoE layer
    size = _uniform_bytes(3, group_size=64)
    w3 = quantize(QuantizeOptions(model=TRAINED, out=root / "w3", bits=3, calib=calib, group_size=64))
    alloc = quantize(QuantizeOptions(model=TRAINED, out=root / "alloc", calib=calib, target_size=size, group_size=64))
    manifest = json.loads((alloc / "quantkit.json").read_text())
    record = manifest["allocation"]
    assert record["runtime"] == "vllm" and record["predicted_bytes"] <= size
    written = get_format("gptq").file_bytes(alloc)
    assert written["tensor_bytes"] == record["predicted_bytes"]
    schemes: dict[tuple, set] = {}
    for u in record["units"]:
        schemes.setdefault(u["unit"], set()).add(u["scheme"])
    assert all(len(s) == 1 for s in schemes.values())
    report = verify(alloc, runtimes=("vllm",), source=None, load=False)
    # the reference is saved in transformers' native config flavour, which vLLM's ERNIE-VL code cannot
    # build (a property of the source, failed by uniform variants too); every rule about the bits passes
    assert report.failed_ids() <= {"vllm.config_flavour"}, report.failed_ids()
    report = run_profile(ProfileOptions(reference=TRAINED, variants=[str(w3), str(alloc)], out=root / "report",
                                        eval_items_per_kind=10, cuda="off"))
    # KL where the model's predictions are read: text positions. Inside a picture a VL model's outputs
    # are never read (training masks them, generation never happens there), and the sensitivity pass
    # does not weigh them (calibrate/sensitivity.py); the KL over all positions is printed beside it.
    acc = {Path(v["path"]).name if "path" in v else v["name"]: v["accuracy"] for v in report["variants"]}
    w3, al = acc[next(k for k in acc if "w3" in k)], acc[next(k for k in acc if "alloc" in k)]
    k3, ka = w3["kl"]["text"], al["kl"]["text"]
    print(f"\nKL (text positions) at uniform-w3 size ({size} bytes): uniform w3 {k3:.4g}, allocated {ka:.4g}, "
          f"ratio {ka / k3:.3f}; all positions {w3['kl']['all']:.4g} vs {al['kl']['all']:.4g}; "
          f"accuracy {w3['task']['accuracy']:.3f} vs {al['task']['accuracy']:.3f}")
    (root.parent / "alloc-kl.json").write_text(json.dumps({"bytes": size, "w3": k3, "alloc": ka}))
    assert ka <= 0.7 * k3  # issue 15: <= 0.7x uniform 3-bit's mean KL at its size
    assert al["task"]["accuracy"] >= w3["task"]["accuracy"]  # and task accuracy no worse


def test_gguf_units_are_stacked_tensors(tiny_text, tiny_text_gguf, tmp_path):
    calib = tiny_text_gguf["calib"]
    kw = dict(model=str(tiny_text), format="gguf", calib=calib)
    widest = make_plan(QuantizeOptions(out=tmp_path, target_size=10**12, **kw))[2].allocation
    smallest = widest.fixed_bytes + sum(min(u.nbytes) for u in widest.units)
    largest = widest.fixed_bytes + sum(max(u.nbytes) for u in widest.units)
    budget = smallest + (largest - smallest) * 2 // 5  # between two widths (half way is uniform Q5_K)
    plan = make_plan(QuantizeOptions(out=tmp_path, target_size=budget, **kw))[2]
    assert plan.allocation.runtime == "llama.cpp" and plan.predicted_bytes <= budget
    types: dict[tuple, set] = {}
    for e in plan.entries:
        if e.role.kind == "routed_expert":
            types.setdefault((e.role.layer, e.role.proj), set()).add(e.storage)
    assert all(len(t) == 1 for t in types.values())
    assert len({t for s in types.values() for t in s}) > 1  # mixed across stacked tensors
    out = quantize(QuantizeOptions(out=tmp_path / "v", target_size=budget, **kw))
    written = get_format("gguf").file_bytes(out)
    assert written["tensor_bytes"] == plan.predicted_bytes
    # the record, the plan printout and the card name each unit's GGML type, the one in the file
    from quantkit.publish.card_sections import allocation_section

    manifest = json.loads((out / "quantkit.json").read_text())
    for row in manifest["allocation"]["units"]:  # "layer 0 down_exps"
        _, layer, tensor = row["unit"].split()
        assert {row["storage"]} == types[(int(layer), tensor.split("_")[0])], row
    lines = "\n".join(plan.allocation.lines())
    card = "\n".join(allocation_section(manifest))
    for t in {t for s in types.values() for t in s}:
        assert f"({t})" in lines and f"({t}) |" in card


def test_real_28b_choices_on_a_24gb_card():
    r = real_model_choices("ERNIE-4.5-VL-28B-A3B", "24GiB", 32768)
    fits = [row["expert_bits"] for row in r["rows"] if row["fits"]]
    assert fits and r["bytes_above_largest_fitting"] >= 0


def test_rtn_error_is_measured_on_the_grid_the_format_writes(tiny_text, tiny_text_gguf):
    """The allocator's error of a width is the error of the weights the format would write: for GGUF's
    Q2_K, the fitted K-quant grid of the written file, not a min/max grid of the same bits."""
    import torch

    from quantkit.allocate import tensor_error
    from quantkit.checkpoint import Checkpoint
    from quantkit.quantize.rtn import quantize_rtn
    from quantkit.scheme import fit_group, parse_scheme_label

    fmt = get_format("gguf")
    variant = tiny_text_gguf["w2-rtn"]
    tensors = json.loads((variant / "quantkit.json").read_text())["tensors"]
    written = fmt.dequantized_state_dict(variant)
    ckpt = Checkpoint.open(tiny_text)
    gen = torch.Generator().manual_seed(0)
    checked = 0
    for name, rec in tensors.items():
        if not rec["role"].startswith("routed_expert") or name not in written:
            continue
        w = ckpt.read(name).float()
        x = torch.randn(4 * w.shape[1], w.shape[1], generator=gen)
        h = x.T @ x / x.shape[0]
        scheme = parse_scheme_label(rec["scheme"])
        dw = written[name].float() - w
        actual = float(((dw @ h) * dw).sum())
        estimate = tensor_error(w, h, scheme, rows=None, backend=fmt.backend())
        assert estimate == pytest.approx(actual, rel=1e-4)
        fs = fit_group(scheme, w.shape[1])[0]
        plain = quantize_rtn(w, fs.bits, fs.group_size, fs.sym).dequantize() - w
        assert abs(float(((plain @ h) * plain).sum()) / actual - 1) > 0.05  # the grids differ: the test can tell
        checked += 1
    assert checked >= 3


def test_mlp_output_factor_follows_real_inputs_with_their_mean():
    """A SwiGLU whose gate is mostly off for its real inputs (they share a mean direction): an error in
    W_up reaches the output only through the few open units. The surrogate N(μ, H - μμᵀ) gives the
    factor measured on the real inputs within 25 %; the zero-mean N(0, H) with the same second moment
    opens half the units and overstates it (here ~16x; 1.8-5x on the text reference's experts)."""
    import torch
    import torch.nn.functional as F

    from quantkit.allocate import mlp_output_factors
    from quantkit.quantize.rtn import quantize_rtn
    from quantkit.scheme import QuantScheme

    gen = torch.Generator().manual_seed(3)
    d, inter, n = 64, 128, 4096
    mu = torch.randn(d, generator=gen)
    mu = 2.5 * mu / mu.norm()
    w = {"gate": torch.randn(inter, d, generator=gen) / d ** 0.5, "up": torch.randn(inter, d, generator=gen) / d ** 0.5,
         "down": torch.randn(d, inter, generator=gen) / inter ** 0.5}
    w["gate"] -= torch.outer(torch.linspace(-0.3, 1.0, inter), mu) / mu.norm()  # most units off along the mean
    x = mu + 0.3 * torch.randn(n, d, generator=gen)
    assert 0.1 < float((x @ w["gate"].T > 0).float().mean()) < 0.4  # a quarter of the units open
    h = x.T @ x / n
    scheme = QuantScheme(bits=2, group_size=64)

    def real(proj):  # the factor on the real inputs, as mlp_output_factors defines it
        wq = quantize_rtn(w[proj], 2, 64, True).dequantize()
        g, u = (x @ wq.T, x @ w["up"].T) if proj == "gate" else (x @ w["gate"].T, x @ wq.T)
        dy = (F.silu(g) * u) @ w["down"].T - (F.silu(x @ w["gate"].T) * (x @ w["up"].T)) @ w["down"].T
        return float(dy.pow(2).sum()) / float((x @ (wq - w[proj]).T).pow(2).sum())

    with_mean = mlp_output_factors(w, h, [scheme], mean=x.mean(0))
    zero_mean = mlp_output_factors(w, h, [scheme])
    assert with_mean["up"][0] == pytest.approx(real("up"), rel=0.25)
    assert zero_mean["up"][0] > 2 * real("up")


@pytest.fixture(scope="module")
def text_w3_size(tmp_path_factory):
    """The text reference (quantkit/reference/trained_text) in vLLM's units at uniform 3-bit GPTQ
    experts' size (group 128), against uniform 3-bit: KL at the answer positions and over all positions,
    and exact-match accuracy, on 300 held-out queries of its table (as bench/allocation_bound.py)."""
    from bench.allocation_bound import eval_ids, torch_logprobs
    from bench.llama_recipes import calibrate_on_table, score
    from quantkit.loader import load, load_source
    from quantkit.reference import trained_text as tt

    ref = tt.TRAINED_TEXT_DIR
    root = tmp_path_factory.mktemp("text-alloc")
    calib = calibrate_on_table(ref, 256, root)
    ids, start = eval_ids(ref, 300)


    base = dict(model=str(ref), profile="ernie45-moe-w4", calib=calib)
    size = make_plan(QuantizeOptions(out=Path("."), bits=3, **base))[2].predicted_bytes
    w3 = quantize(QuantizeOptions(out=root / "w3", bits=3, **base))
    alloc = quantize(QuantizeOptions(out=root / "alloc", target_size=size, runtime="vllm", **base))
    fp = torch_logprobs(load_source(ref), ids)
    rows = {name: score(fp, torch_logprobs(load(v), ids), ids.tolist(), start) for name, v in (("w3", w3), ("alloc", alloc))}
    rows["choice"] = {u["unit"]: u["scheme"] for u in json.loads((alloc / "quantkit.json").read_text())["allocation"]["units"]}
    print(f"\ntext reference, vLLM units at uniform w3 size ({size} bytes): {json.dumps(rows)}")
    return rows


def test_text_reference_allocation_at_uniform_w3_size_has_under_0_7x_the_kl(text_w3_size):
    """Issue 15 on the text reference, in vLLM's units: the allocation's KL <= 0.7x uniform 3-bit's, at
    the answer positions and over all of them. bench/allocation_bound.py measured that only one
    assignment of the three FusedMoE layers' widths gets there (layer 0 up to 4 bits, layer 2 down to 2);
    with a zero-mean surrogate for the gate/up output factor the objective rated it a tie with uniform."""
    w3, alloc = text_w3_size["w3"], text_w3_size["alloc"]
    assert alloc["kl_answer"] <= 0.7 * w3["kl_answer"], text_w3_size
    assert alloc["kl_all"] <= 0.7 * w3["kl_all"], text_w3_size


@pytest.mark.xfail(strict=True, reason="issue 15 open: the one assignment under 0.7x uniform's KL (layer 2 at "
                   "2 bits) answers 3 of the 300 held-out queries fewer than uniform 3-bit (92.0 vs 93.0 %)")
def test_text_reference_allocation_at_uniform_w3_size_keeps_accuracy(text_w3_size):
    assert text_w3_size["alloc"]["accuracy"] >= text_w3_size["w3"]["accuracy"], text_w3_size
