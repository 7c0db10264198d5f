"""Accuracy of a variant against its reference, from one teacher-forced pass over an evaluation set.

Both models run on the same batches (fp32, CPU unless CUDA is asked for). Forward hooks record, for
every MoE layer, the experts each router selected per token (text and vision routers), and the MoE
block's input and output. Metrics (all over real tokens, padding excluded):

- ``kl``: mean KL(reference || variant) of the next-token distributions, per position, split into
  text positions and image positions (positions whose input token goes to the vision experts:
  image placeholders and the image start/end markers); ``kl_median`` / ``kl_p99``: the median and
  99th percentile over positions (near 8 bits the mean is ruled by the few tokens whose router sits
  on a top-k tie and flips); ``top1``: share of positions where both models' most likely next token
  agree, same split.
- ``perplexity``: exp of the mean negative log-likelihood of the held-out text: every text token
  of the evaluation items (questions, chat markup, answers) predicted from a text position;
  ``answer_nll``: the mean over answer tokens alone.
- ``task``: exact-match accuracy on the evaluation items, overall and per kind. Greedy decoding
  reproduces the reference answer exactly iff every answer token (and the end token) is the
  argmax at the position before it, so it is read from the same teacher-forced pass. ``flips``:
  items whose outcome (right / wrong) differs from the reference's, both ways; accuracy alone
  hides changes that cancel out.
- ``router``: per MoE layer and modality, the mean overlap of the selected top-k expert sets
  (|S_ref ∩ S_var| / k) and the share of tokens whose set is unchanged. Routers are never
  quantized; their inputs change with every quantized layer upstream.
- ``moe_error``: per MoE layer and modality, the relative output error ‖y_var − y_ref‖² / ‖y_ref‖²
  of the MoE block (routed + shared experts): ``in_model`` (each model on its own hidden states, so
  upstream error included) and ``isolated`` (the variant's block on the reference's inputs: the
  error this layer's quantization adds by itself). These ratios of sums are ruled by the tokens with
  the largest outputs (chat markup, attention-sink-like tokens); ``isolated_median`` /
  ``in_model_median`` are the medians over tokens of each token's own ‖Δy‖² / ‖y‖², and
  ``isolated_p99`` its 99th percentile: GPTQ can be far better on the typical token and worse on
  the few heaviest ones.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..adapters import adapter_for
from ..adapters.base import hidden_states
from ..reference import task


@dataclass
class EvalBatch:
    inputs: dict
    answer_start: list[int]
    lengths: list[int]
    kinds: list[str]
    valid: torch.Tensor  # bool [B, T]
    vision: torch.Tensor  # bool [B, T]: the input token goes to the vision experts
    image: torch.Tensor  # bool [B, T]: the input token is an image placeholder

    @property
    def tokens(self) -> int:
        return int(self.valid.sum())


def prepare_batches(processor, items: list[task.Item], batch_size: int = 32) -> list[EvalBatch]:
    """Encode ``items`` (prompt + reference answer) and collate them into padded batches."""
    pad = task.tokenizer_of(processor).pad_token_id
    batches = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        b = task.collate([task.encode(processor, it) for it in chunk], pad_token_id=pad)
        inputs = task.model_inputs(b)
        valid = inputs["attention_mask"].bool()
        moe_mm = inputs.get("moe_mm_token_type_ids", torch.zeros_like(inputs["input_ids"]))
        mm = inputs.get("mm_token_type_ids", torch.zeros_like(inputs["input_ids"]))
        batches.append(EvalBatch(inputs, b["answer_start"], b["lengths"], [it.kind for it in chunk], valid,
                                 (moe_mm != 0) & valid, (mm != 0) & valid))
    return batches


class _Probe:
    """Forward hooks on the routers and MoE blocks of a model (through its family's layer runner)."""

    def __init__(self, model):
        config = model.config.to_dict()
        runner = adapter_for(config).runner()
        self.handles = []
        self.blocks: dict[int, torch.nn.Module] = {}
        self.routing: dict[tuple[int, str], torch.Tensor] = {}
        self.block_in: dict[int, tuple] = {}
        self.block_out: dict[int, torch.Tensor] = {}
        self.recording = True
        for n, layer in enumerate(runner.decoder_layers(model)):
            blocks = runner.moe_blocks(layer)
            if not blocks:
                continue
            self.blocks[n] = layer.mlp
            self.handles.append(layer.mlp.register_forward_hook(self._block_hook(n)))
            for modality, gate, _experts in blocks:
                self.handles.append(gate.register_forward_hook(self._router_hook(n, modality)))

    def _block_hook(self, n):
        def hook(module, args, output):
            if self.recording:
                hidden = args[0]
                mm = args[1] if len(args) > 1 else None
                self.block_in[n] = (hidden.detach(), None if mm is None else mm.detach())
                self.block_out[n] = hidden_states(output).detach()
        return hook

    def _router_hook(self, n, modality):
        def hook(module, args, output):
            if self.recording:
                self.routing[(n, modality)] = output[2].detach().sort(-1).values
        return hook

    def reset(self):
        self.routing, self.block_in, self.block_out = {}, {}, {}

    def close(self):
        for h in self.handles:
            h.remove()


@dataclass
class _Pass:
    """What one model produced on one batch."""

    logprobs: torch.Tensor  # [B, T, V] fp32
    routing: dict  # (layer, modality) -> selected experts of the real tokens, [N, k] sorted
    block_in: dict
    block_out: dict


def _routing_of_real_tokens(routing: dict, batch: EvalBatch) -> dict:
    """Routers see the tokens of their modality in row-major order; keep the unpadded ones."""
    out = {}
    attention = batch.inputs["attention_mask"].bool()
    vision_all = batch.inputs.get("moe_mm_token_type_ids", torch.zeros_like(attention, dtype=torch.long)) != 0
    any_vision = bool(vision_all.any())
    for (n, modality), sel in routing.items():
        if modality == "text":
            keep = attention[~vision_all] if any_vision else attention.reshape(-1)
        else:
            keep = attention[vision_all]
        if sel.shape[0] == keep.numel():
            out[(n, modality)] = sel[keep]
    return out


@torch.no_grad()
def run(model, batches: list[EvalBatch], device: str | torch.device = "cpu", keep_io: bool = True) -> list[_Pass]:
    probe = _Probe(model)
    passes = []
    try:
        for b in batches:
            probe.reset()
            inputs = {k: v.to(device) for k, v in b.inputs.items()}
            logits = model(**inputs, use_cache=False).logits.float().cpu()
            passes.append(_Pass(F.log_softmax(logits, -1), _routing_of_real_tokens(
                {k: v.cpu() for k, v in probe.routing.items()}, b),
                {n: tuple(None if t is None else t.cpu() for t in io) for n, io in probe.block_in.items()} if keep_io else {},
                {n: t.cpu() for n, t in probe.block_out.items()} if keep_io else {}))
    finally:
        probe.close()
    return passes


class _Sums:
    def __init__(self):
        self.s = defaultdict(float)
        self.n = defaultdict(int)

    def add(self, key, total: float, count: int):
        self.s[key] += total
        self.n[key] += count

    def mean(self, key):
        return self.s[key] / self.n[key] if self.n[key] else None


def self_metrics(passes: list[_Pass], batches: list[EvalBatch]) -> dict:
    """Perplexity and task accuracy of one model on its own (no comparison)."""
    nll, correct, items = _Sums(), defaultdict(list), []
    for p, b in zip(passes, batches):
        ids = b.inputs["input_ids"]
        lp = p.logprobs[:, :-1]
        target = ids[:, 1:]
        token_nll = -lp.gather(-1, target[..., None])[..., 0]
        text_target = b.valid[:, 1:] & ~b.image[:, 1:] & ~b.image[:, :-1]
        nll.add("text", float(token_nll[text_target].sum()), int(text_target.sum()))
        pred = p.logprobs.argmax(-1)
        for i, (start, length) in enumerate(zip(b.answer_start, b.lengths)):
            nll.add("answer", float(token_nll[i, start - 1:length - 1].sum()), length - start)
            ok = bool((pred[i, start - 1:length - 1] == ids[i, start:length]).all())
            correct[b.kinds[i]].append(ok)
            items.append(ok)
    everything = [c for v in correct.values() for c in v]
    text_nll = nll.mean("text")
    return {"perplexity": math.exp(text_nll), "text_nll": text_nll, "text_tokens": nll.n["text"],
            "answer_nll": nll.mean("answer"),
            "task": {"accuracy": sum(everything) / len(everything), "items": len(everything),
                     "by_kind": {k: sum(v) / len(v) for k, v in sorted(correct.items())}},
            "correct": items}


def flips(reference_correct: list[bool], correct: list[bool]) -> dict:
    """Items whose exact-match outcome differs from the reference's (Dutta et al. 2024, "Accuracy is
    not all you need"): two variants with the same accuracy can answer different items right."""
    lost = sum(r and not c for r, c in zip(reference_correct, correct))
    gained = sum(c and not r for r, c in zip(reference_correct, correct))
    n = len(correct)
    return {"flips": lost + gained, "flip_rate": (lost + gained) / n if n else None,
            "correct_to_wrong": lost, "wrong_to_correct": gained}


@torch.no_grad()
def compare(ref: list[_Pass], var: list[_Pass], batches: list[EvalBatch], var_model, top_k: int,
            device: str | torch.device = "cpu") -> dict:
    """Metrics of a variant's passes against the reference's (module docstring)."""
    kl, top1 = _Sums(), _Sums()
    kl_tokens: dict[str, list[torch.Tensor]] = defaultdict(list)
    overlap, exact = _Sums(), _Sums()
    err_model, err_iso = _Sums(), _Sums()
    per_token: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    probe = _Probe(var_model)
    probe.recording = False
    try:
        for r, v, b in zip(ref, var, batches):
            token_kl = (r.logprobs.exp() * (r.logprobs - v.logprobs)).sum(-1)
            agree = r.logprobs.argmax(-1) == v.logprobs.argmax(-1)
            for name, mask in (("text", b.valid & ~b.vision), ("image", b.vision), ("all", b.valid)):
                kl.add(name, float(token_kl[mask].sum()), int(mask.sum()))
                kl_tokens[name].append(token_kl[mask])
                top1.add(name, float(agree[mask].sum()), int(mask.sum()))
            for key, sel in r.routing.items():
                other = v.routing.get(key)
                if other is None or other.shape != sel.shape or not sel.numel():
                    continue
                common = (sel[:, :, None] == other[:, None, :]).any(-1).sum(-1).float()
                overlap.add(key, float(common.sum()) / top_k, sel.shape[0])
                exact.add(key, float((sel == other).all(-1).sum()), sel.shape[0])
            for n, y_ref in r.block_out.items():
                hidden, mm = r.block_in[n]
                block = probe.blocks[n]
                args = (hidden.to(device),) if mm is None else (hidden.to(device), mm.to(device))
                y_iso = hidden_states(block(*args)).float().cpu()
                y_var = v.block_out[n]
                for modality, mask in (("text", b.valid & ~b.vision), ("vision", b.vision)):
                    if not mask.any():
                        continue
                    denom = float(y_ref[mask].pow(2).sum())
                    err_model.add((n, modality), float((y_var[mask] - y_ref[mask]).pow(2).sum()), 0)
                    err_model.add((n, modality, "ref"), denom, int(mask.sum()))
                    err_iso.add((n, modality), float((y_iso[mask] - y_ref[mask]).pow(2).sum()), 0)
                    ref_sq = y_ref[mask].pow(2).sum(-1).clamp_min(1e-30)
                    per_token[(n, modality, "iso")].append((y_iso[mask] - y_ref[mask]).pow(2).sum(-1) / ref_sq)
                    per_token[(n, modality, "model")].append((y_var[mask] - y_ref[mask]).pow(2).sum(-1) / ref_sq)
    finally:
        probe.close()
    router = {f"{n}.{m}": {"overlap": overlap.mean((n, m)), "unchanged": exact.mean((n, m)), "tokens": overlap.n[(n, m)]}
              for (n, m) in sorted(overlap.n)}
    moe_error = {}
    for key in sorted(k for k in err_model.s if len(k) == 2):
        ref_sq = err_model.s[key + ("ref",)]
        iso, in_model = torch.cat(per_token[key + ("iso",)]), torch.cat(per_token[key + ("model",)])
        moe_error[f"{key[0]}.{key[1]}"] = {"in_model": err_model.s[key] / ref_sq if ref_sq else None,
                                           "isolated": err_iso.s[key] / ref_sq if ref_sq else None,
                                           "isolated_median": float(iso.median()),
                                           "isolated_p99": float(torch.quantile(iso, 0.99)),
                                           "in_model_median": float(in_model.median()),
                                           "tokens": err_model.n[key + ("ref",)]}
    splits = [k for k in ("all", "text", "image") if kl.n[k]]
    return {"kl": {k: kl.mean(k) for k in ("all", "text", "image")},
            "kl_median": {k: float(torch.cat(kl_tokens[k]).median()) for k in splits},
            "kl_p99": {k: float(torch.quantile(torch.cat(kl_tokens[k]), 0.99)) for k in splits},
            "top1": {k: top1.mean(k) for k in ("all", "text", "image")},
            "positions": {k: kl.n[k] for k in ("all", "text", "image")},
            "router": router,
            "router_mean_overlap": _mean([r["overlap"] for r in router.values()]),
            "moe_error": moe_error,
            "moe_error_mean_isolated": _mean([e["isolated"] for e in moe_error.values()]),
            "moe_error_median_isolated": _mean([e["isolated_median"] for e in moe_error.values()]),
            "moe_error_mean_in_model": _mean([e["in_model"] for e in moe_error.values()])}


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


@dataclass
class Timer:
    seconds: dict = field(default_factory=dict)

    def __call__(self, name):
        timer = self

        class _T:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.seconds[name] = round(timer.seconds.get(name, 0.0) + time.perf_counter() - self.t0, 3)
        return _T()
