"""The profile report: ``report.json`` (schema below), ``report.md`` (tables a person reads) and
``tradeoff.png`` (accuracy loss against weight bytes, one point per variant, Pareto front marked).

report.json, schema ``quantkit.profile/1`` (bytes are integers, metrics floats, null where unmeasured):

    schema, created, quantkit_version
    machine        {platform, processor, torch, threads, cpu_capability, fp32_gflops (matmul, this run),
                    cuda (device name or null)}
    eval           {source (JSONL path or "builtin:<split>"), items, kinds, batches, positions{text,image}}
    contexts, batch           the serving shapes the VRAM estimate is computed for
    vram_formula              the estimate's formula and its assumptions (see profile/memory.py)
    reference      {name, path, memory, accuracy}                        (accuracy = self metrics)
    variants       [{name, path, method, expert_bits, expert_scheme, profile,
                     memory   {file_bytes, tensor_bytes, header_bytes, params, files{shard: bytes},
                               by_role{role: {tensors, params, bytes, bits_per_param}},
                               vram{context: {weights, kv_cache, activations, runtime_overhead, total}},
                               cuda (null, or {device, peak_allocated, estimate, ratio})},
                     accuracy {kl{all,text,image}, kl_median{...}, kl_p99{...}, top1{all,text,image},
                               positions{...},
                               perplexity, text_nll, answer_nll,
                               task{accuracy, items, by_kind, flips, flip_rate, correct_to_wrong,
                                    wrong_to_correct},
                               task_accuracy_drop, router{"L.modality": {overlap, unchanged, tokens}},
                               router_mean_overlap,
                               moe_error{"L.modality": {in_model, isolated, isolated_median, isolated_p99,
                                                        in_model_median, tokens}},
                               moe_error_mean_isolated, moe_error_median_isolated, moe_error_mean_in_model},
                     seconds  {load, forward, compare}, tokens_per_second}]
    pareto         {kl: [names], task: [names]}   variants on the bytes / loss Pareto front (KL: text positions)
    real_ernie45_vl_28b       memory.real_28b_table(): weights per precision and VRAM estimates
    notes          [strings]

The first table of report.md is the tradeoff table (``quantkit package`` copies it into model cards).
"""
from __future__ import annotations

import json
from pathlib import Path

SCHEMA = "quantkit.profile/1"


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Names of the points (name, bytes, loss) that no other point beats on both (lower is better)."""
    front = []
    for name, b, loss in points:
        dominated = any((b2 <= b and l2 <= loss) and (b2 < b or l2 < loss) for _, b2, l2 in points)
        if not dominated:
            front.append(name)
    return front


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:.2f} MB"


def _gb(n) -> str:
    return "–" if n is None else f"{n / 1e9:.2f}"


def _f(x, fmt="{:.4f}") -> str:
    return "–" if x is None else fmt.format(x)


def _sci(x) -> str:
    return "–" if x is None else f"{x:.2e}"


def _pp(x) -> str:
    x = round(100 * x, 1)
    return f"{x:+.1f} pp" if x else "0.0 pp"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def markdown(report: dict) -> str:
    ref = report["reference"]
    ref_bytes = ref["memory"]["file_bytes"]
    ctx = [str(c) for c in report["contexts"]]
    lines = [f"# quantkit profile: {ref['name']}", ""]
    head = ["variant", "method", "experts", "weights (files)", "× ref"] + [f"VRAM @{c}*" for c in ctx] + [
        "KL text", "KL image", "top-1 text", "top-1 image", "task acc", "Δ task", "flips", "ppl", "router overlap",
        "MoE err (isolated, median / all)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    ra = ref["accuracy"]
    lines.append("| " + " | ".join(
        [f"{ref['name']} (reference)", "–", ref.get("dtype", "–"), _mb(ref_bytes), "1.00"]
        + [_mb(_model_vram(ref["memory"]["vram"][c])) for c in ctx]
        + ["0", "0", "100%", "100%", _pct(ra["task"]["accuracy"]), "–", "–", _f(ra["perplexity"], "{:.3f}"), "100%",
           "0"])
        + " |")
    for v in report["variants"]:
        a, m = v["accuracy"], v["memory"]
        lines.append("| " + " | ".join(
            [v["name"], v["method"], v["expert_scheme"], _mb(m["file_bytes"]), f"{m['file_bytes'] / ref_bytes:.2f}"]
            + [_mb(_model_vram(m["vram"][c])) for c in ctx]
            + [_sci(a["kl"]["text"]), _sci(a["kl"]["image"]), _pct(a["top1"]["text"]), _pct(a["top1"]["image"]),
               _pct(a["task"]["accuracy"]), _pp(-a["task_accuracy_drop"]),
               f"{a['task']['flips']} ({a['task']['correct_to_wrong']}↓ {a['task']['wrong_to_correct']}↑)",
               _f(a["perplexity"], "{:.3f}"), _pct(a["router_mean_overlap"]),
               f"{_sci(a['moe_error_median_isolated'])} / {_sci(a['moe_error_mean_isolated'])}"])
            + " |")
    ev = report["eval"]
    lines += ["", f"Evaluation: {ev['items']} items ({', '.join(ev['kinds'])}) from `{ev['source']}`; "
              f"{ev['positions']['text']} text and {ev['positions']['image']} image positions. KL = mean "
              "KL(reference ‖ variant) of next-token distributions in nats; top-1 = share of positions with "
              "the same most likely token; task acc = exact match (greedy answer), Δ task its change from the "
              "reference; flips = items answered right by one and wrong by the other (↓ lost, ↑ gained); "
              "ppl = perplexity of the "
              "held-out text; router overlap = mean share of the reference's top-k experts the variant's "
              "routers still pick (all MoE layers, both modalities); MoE err = ‖Δy‖²/‖y‖² of each MoE "
              "block on the reference's inputs, per token (median) and over all tokens (dominated by the "
              "few with the largest outputs), mean over layers and modalities. *VRAM = serving estimate "
              f"(batch {report['batch']}; formula below) of weights + KV cache + activations; add the fixed "
              f"{report['vram_formula']['assumptions']['runtime_overhead_bytes'] / 2**30:.2f} GiB runtime allowance "
              "for a total (report.json has both). Pareto front (bytes vs KL at text positions, where predictions "
              "are read): "
              f"{', '.join(report['pareto']['kl']) or '–'}; (bytes vs task accuracy): "
              f"{', '.join(report['pareto']['task']) or '–'}.", ""]

    lines += _per_layer_tables(report)
    lines += _role_table(report)
    lines += _real_28b(report)
    lines += _vram_section(report)
    lines += _cuda_section(report)
    lines += _speed_section(report)
    if report.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(lines)


def _model_vram(v: dict) -> int:
    return v["total"] - v["runtime_overhead"]


def _per_layer_tables(report: dict) -> list[str]:
    variants = report["variants"]
    if not variants:
        return []
    keys = list(variants[0]["accuracy"]["router"])
    err_keys = list(variants[0]["accuracy"]["moe_error"])
    out = ["## Per MoE layer", "", "Router agreement (overlap of the selected top-k experts, per layer.modality; "
           "unchanged-set share in brackets):", ""]
    out += ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for v in variants:
        r = v["accuracy"]["router"]
        out.append(f"| {v['name']} | " + " | ".join(
            f"{_pct(r[k]['overlap'])} ({_pct(r[k]['unchanged'])})" if k in r else "–" for k in keys) + " |")
    out += ["", "MoE block output error ‖Δy‖²/‖y‖², isolated (the variant's block on the reference's inputs): "
            "median token / 99th-percentile token / all tokens together; then in the model (own inputs, "
            "upstream error included): median token / all tokens:", ""]
    out += ["| variant | " + " | ".join(err_keys) + " |", "|---|" + "---|" * len(err_keys)]
    for v in variants:
        e = v["accuracy"]["moe_error"]
        out.append(f"| {v['name']} | " + " | ".join(
            f"{_sci(e[k]['isolated_median'])} / {_sci(e[k]['isolated_p99'])} / {_sci(e[k]['isolated'])}"
            if k in e else "–" for k in err_keys) + " |")
    out += ["", "| in model | " + " | ".join(err_keys) + " |", "|---|" + "---|" * len(err_keys)]
    for v in variants:
        e = v["accuracy"]["moe_error"]
        out.append(f"| {v['name']} | " + " | ".join(
            f"{_sci(e[k]['in_model_median'])} / {_sci(e[k]['in_model'])}" if k in e else "–" for k in err_keys) + " |")
    out += ["", "Task accuracy by kind:", ""]
    kinds = list(report["reference"]["accuracy"]["task"]["by_kind"])
    out += ["| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, acc in [(report["reference"]["name"], report["reference"]["accuracy"])] + [
            (v["name"], v["accuracy"]) for v in variants]:
        out.append(f"| {name} | " + " | ".join(_pct(acc["task"]["by_kind"].get(k)) for k in kinds) + " |")
    return out + [""]


def _role_table(report: dict) -> list[str]:
    models = [(report["reference"]["name"], report["reference"]["memory"])] + [
        (v["name"], v["memory"]) for v in report["variants"]]
    roles = sorted({r for _, m in models for r in m["by_role"]})
    out = ["## Weight bytes by role (from the files)", "",
           "Bytes of every tensor in the shards, attributed to the role of its weight (a quantized module's "
           "qweight, qzeros, scales and g_idx together); bits per weight in brackets. Files = tensors + "
           "safetensors headers, equal to the shards' sizes on disk.", ""]
    out += ["| role | " + " | ".join(n for n, _ in models) + " |", "|---|" + "---|" * len(models)]
    for role in roles:
        cells = []
        for _, m in models:
            r = m["by_role"].get(role)
            cells.append("–" if r is None else f"{r['bytes']:,} ({r['bits_per_param']:.2f} b)")
        out.append(f"| {role} | " + " | ".join(cells) + " |")
    for label, key in (("tensors", "tensor_bytes"), ("headers", "header_bytes"), ("files", "file_bytes")):
        out.append(f"| **{label}** | " + " | ".join(f"{m[key]:,}" for _, m in models) + " |")
    return out + [""]


def _real_28b(report: dict) -> list[str]:
    t = report.get("real_ernie45_vl_28b")
    if not t:
        return []
    ctx = [str(c) for c in t["contexts"]]
    out = [f"## {t['model']}: weights and serving VRAM (estimate from the real config)", "",
           f"{t['params'] / 1e9:.2f} B parameters counted from the config (routed experts "
           f"{t['params_by_kind']['routed_expert'] / 1e9:.2f} B, vision tower + resampler "
           f"{(t['params_by_kind']['vision_tower'] + t['params_by_kind']['resampler']) / 1e9:.2f} B, embeddings "
           f"{t['params_by_kind']['embedding'] / 1e9:.2f} B); KV cache {t['kv_bytes_per_token']:,} bytes per token "
           f"(bf16). Batch {t['batch']}. GB = 10⁹ bytes.", ""]
    head = ["precision", "profile", "weights GB (this plan)", "GiB", "params × bits / 8", "commonly quoted"] + [
        f"VRAM GB @{c}" for c in ctx]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in t["rows"]:
        out.append("| " + " | ".join([r["precision"], r["profile"], _gb(r["weights"]), f"{r['weights'] / 2**30:.2f}",
                                      _gb(r["naive_weights"]), r["quoted_gb"]]
                                     + [_gb(r["vram"][c]["total"]) for c in ctx]) + " |")
    bf16 = t["rows"][0]
    out += ["", "Why these differ from the commonly quoted figures:",
            f"- bf16: {bf16['weights'] / 1e9:.1f} GB = {bf16['weights'] / 2**30:.1f} GiB for {t['params'] / 1e9:.2f} B "
            "parameters; the quoted ~56 GB is the \"28B\" of the name × 2 bytes (and GB/GiB are often mixed up).",
            "- The quoted int8/int4/2-bit figures are the same 28 B × bits / 8: every parameter at the low width. "
            "The shipped profiles keep the vision tower, resampler, embeddings (tied output head), routers and norms "
            "in bf16, give attention and shared experts 8 bits (w4) or 4 bits (w2), and store fp16 scales (and "
            "zero points for asymmetric 2-bit) per group of 128 / 64 weights plus an int32 g_idx per input row."]
    for r in t["rows"][1:]:
        roles = r.get("by_role") or {}
        experts = roles.get("routed_expert.text", 0) + roles.get("routed_expert.vision", 0)
        dense = sum(roles.get(k, 0) for k in ("attention", "shared_expert", "dense_mlp"))
        kept = r["weights"] - experts - dense
        bits = 8 * experts / t["params_by_kind"]["routed_expert"]
        out.append(f"  - {r['precision']} ({r['profile']}): routed experts {experts / 1e9:.2f} GB ({bits:.2f} bits per "
                   f"weight with scales/zeros/g_idx) + attention, shared experts and dense MLP {dense / 1e9:.2f} GB + "
                   f"bf16 vision tower, resampler, embeddings, routers and norms {kept / 1e9:.2f} GB.")
    out += ["- Serving needs more than the weights: the KV cache grows with context × batch, activations and "
            "workspaces come on top (next section); engines such as vLLM also reserve a fixed share of the card "
            "and fill it with KV blocks, so what they *take* is not what a model *needs*.",
            f"- KV cache: {t['shape']['num_layers']} layers × {t['shape']['num_kv_heads']} KV heads × "
            f"{t['shape']['head_dim']} × 2 (K, V) × 2 bytes = {t['kv_bytes_per_token']:,} bytes per token: "
            f"{t['kv_bytes_per_token'] * 4096 / 1e9:.2f} GB at 4k, {t['kv_bytes_per_token'] * 32768 / 1e9:.2f} GB at 32k, "
            f"{t['kv_bytes_per_token'] * 131072 / 1e9:.2f} GB at the 128k maximum (per sequence).", ""]
    return out


def _vram_section(report: dict) -> list[str]:
    f = report["vram_formula"]
    return ["## VRAM estimate", "", "```", f["formula"], "```", "",
            "Assumptions: " + ", ".join(f"{k} = {v}" for k, v in f["assumptions"].items()) + ".", ""]


def _cuda_section(report: dict) -> list[str]:
    rows = [(v["name"], v["memory"].get("cuda")) for v in report["variants"]]
    if not any(c for _, c in rows):
        return ["## Measured GPU memory", "", "Not measured: no CUDA device in this run "
                f"({report['machine'].get('cuda') or 'torch.cuda.is_available() is False'}).", ""]
    out = ["## Measured GPU memory (CUDA, the dequantized evaluation path)", "",
           "| variant | device | peak allocated | estimate | measured / estimate |", "|---|---|---|---|---|"]
    for name, c in rows:
        if c:
            out.append(f"| {name} | {c['device']} | {_mb(c['peak_allocated'])} | {_mb(c['estimate'])} | "
                       f"{c['peak_allocated'] / c['estimate']:.2f} |")
    return out + [""]


def _speed_section(report: dict) -> list[str]:
    m = report["machine"]
    out = ["## Speed of the CPU evaluation path (secondary)", "",
           f"{m['processor'] or m['platform']}, torch {m['torch']} ({m['cpu_capability']}), {m['threads']} thread(s), "
           f"fp32 matmul {m['fp32_gflops']:.0f} GFLOP/s measured in this run. Variants are evaluated with "
           "`quantkit.load` (weights dequantized to fp32, run by transformers), so speed says nothing about "
           "low-bit kernels; it is what a CPU check of a variant costs.", "",
           "| model | load s | forward s | compare s | tokens/s |", "|---|---|---|---|---|"]
    ref = report["reference"]
    out.append(f"| {ref['name']} | {ref['seconds'].get('load', 0):.1f} | {ref['seconds'].get('forward', 0):.1f} | – | "
               f"{ref.get('tokens_per_second', 0):.0f} |")
    for v in report["variants"]:
        s = v["seconds"]
        out.append(f"| {v['name']} | {s.get('load', 0):.1f} | {s.get('forward', 0):.1f} | {s.get('compare', 0):.1f} | "
                   f"{v.get('tokens_per_second', 0):.0f} |")
    return out + [""]


def plot(report: dict, path: Path) -> Path:
    """tradeoff.png: accuracy loss against weight bytes; left task-accuracy drop, right mean KL."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = report["reference"]
    variants = report["variants"]
    ref_mb = ref["memory"]["file_bytes"] / 1e6
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2), constrained_layout=True)
    panels = (
        ("task", "task accuracy drop vs reference (percentage points)",
         lambda v: 100 * v["accuracy"]["task_accuracy_drop"], False),
        ("kl", "mean KL(reference ‖ variant) per text position (nats, log scale)",
         lambda v: v["accuracy"]["kl"]["text"], True),
    )
    colours = {"gptq": "tab:blue", "rtn": "tab:orange", "gptq allocated": "tab:green", "rtn allocated": "tab:olive"}
    series = sorted({_series(v) for v in variants}, key=lambda s: (s not in colours, s))
    for ax, (key, ylabel, value, log) in zip(axes, panels):
        front = set(report["pareto"][key])
        pts = []
        placed: dict[tuple, int] = {}  # labels of coinciding points are stacked, not overprinted
        for v in variants:
            x, y = v["memory"]["file_bytes"] / 1e6, value(v)
            if log:
                y = max(y, 1e-9)
            pts.append((x, y, v))
            on = v["name"] in front
            ax.scatter([x], [y], s=90 if on else 45, color=colours.get(_series(v), "tab:gray"),
                       edgecolors="black" if on else "none", linewidths=1.5, zorder=3)
            label = v["name"] if log else f"{v['name']} ({v['accuracy']['task']['flips']} flips)"
            spot = (round(x, 2), float(f"{y:.2g}"))
            stacked = placed.get(spot, 0)
            placed[spot] = stacked + 1
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 5 + 11 * stacked), fontsize=8)
        for s in series:  # each series (uniform widths of a method, allocations) as a line by size
            line = sorted((x, y) for x, y, v in pts if _series(v) == s)
            if len(line) > 1:
                ax.plot([p[0] for p in line], [p[1] for p in line], color=colours.get(s, "tab:gray"), lw=1,
                        alpha=0.6, zorder=2)
        fp = sorted((x, y) for x, y, v in pts if v["name"] in front)
        if fp:
            ax.step([p[0] for p in fp], [p[1] for p in fp], where="post", color="black", lw=1, ls="--", zorder=2,
                    label="Pareto front (circled)")
        ax.axvline(ref_mb, color="gray", ls=":", lw=1, label=f"reference {ref['name']} ({ref_mb:.1f} MB, loss 0)")
        if log:
            ax.set_yscale("log")
        else:
            ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel("weight bytes of the variant's files (MB)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        for s in series:
            ax.scatter([], [], color=colours.get(s, "tab:gray"),
                       label=s.upper() if s in ("gptq", "rtn") else s.replace("gptq", "GPTQ").replace("rtn", "RTN"))
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"quantkit profile: accuracy loss vs size, {ref['name']} "
                 f"({report['eval']['items']} held-out items)", fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _series(v: dict) -> str:
    return v.get("series") or v["method"]


def write(report: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "png": out / "tradeoff.png"}
    paths["json"].write_text(json.dumps(report, indent=1) + "\n")
    paths["md"].write_text(markdown(report))
    plot(report, paths["png"])
    return paths
