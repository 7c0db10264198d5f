"""How much an error in each MoE layer's routed-expert output moves the model's predictions.

For a token t, decoder layer l and the modality m of the experts that served it, let o be the routed
experts' output (routing weights applied; what enters the residual stream) and
g_t = d log p(y | x) / d o(t), with y drawn from the model's own next-token distribution at every
position whose prediction is read (text; not inside a picture). E_y[g gᵀ] is the Fisher information
of the predictive distribution with respect to o, so a small error δ in o raises
KL(model || perturbed model) by about ½ E[δᵀ F δ]. quantkit.allocate weights each expert's output
error with F_l,m = mean over the modality's tokens of g gᵀ instead of counting every direction and
every layer alike: on the trained text reference (bench.unit_sensitivity) an error in layer 0 costs
~70x the KL of the same error in layer 2; in the VL reference the last layer's vision experts reach
no text prediction at all.

F is kept as its top `rank` eigenpairs and its trace (the remaining trace spread evenly over the other
directions), so its size does not grow with the hidden width squared.

Computed after the calibration's forward pass, backwards one decoder layer at a time: each layer is
rebuilt from the checkpoint, rerun with gradients on its inputs (saved during the forward pass for the
samples used, under `tokens`), and backpropagated from the gradient its output received; memory is
one layer and its activations for one sample. One label draw per position; the samples are a seeded
shuffle of the calibration set (both modalities), taken until `tokens` is reached.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..adapters.base import hidden_states
from ..runstate import flatten, unflatten
from .samples import vision_mask

DEFAULT_TOKENS = 4096  # tokens of the samples the backward pass uses (calibrate --sensitivity-tokens)
RANK = 64  # eigenpairs kept per layer and modality
SEED = 0
FILE = "sensitivity.safetensors"


@dataclass
class OutputFisher:
    """F ≈ U diag(values) Uᵀ + tail (I - U Uᵀ) with tail = (trace - sum(values)) / (d - rank)."""

    values: torch.Tensor  # [r], descending
    vectors: torch.Tensor  # [d, r]
    trace: float
    tokens: int

    @property
    def mean(self) -> float:
        """trace / d: the weight per output dimension of an isotropic F with the same trace."""
        return self.trace / self.vectors.shape[0]

    @property
    def tail(self) -> float:
        d, r = self.vectors.shape
        return max(self.trace - float(self.values.sum()), 0.0) / (d - r) if d > r else 0.0

    def quadratic(self, dy: torch.Tensor) -> float:
        """sum over rows of δᵀ F δ, δ the rows of `dy` ([n, d])."""
        p = dy.double() @ self.vectors.double()
        top = float((p.pow(2) * self.values.double()).sum())
        return top + self.tail * max(float(dy.double().pow(2).sum()) - float(p.pow(2).sum()), 0.0)

    @cached_property
    def diagonal(self) -> torch.Tensor:
        """diag F ([d]): the weight of each output dimension's squared error, when the errors of
        different dimensions are uncorrelated (down_proj's rounding errors, row by row). Computed once:
        the allocator reads it for every expert and width."""
        v = self.vectors.double()
        return ((v.pow(2) * self.values.double()).sum(-1) + self.tail * (1 - v.pow(2).sum(-1))).float()


def pick_samples(lengths: list[int], tokens: int) -> list[int]:
    """Indices of the samples the backward pass uses: a seeded shuffle, taken while under `tokens`
    (at least one); sorted."""
    order = list(range(len(lengths)))
    random.Random(SEED).shuffle(order)
    chosen, total = [], 0
    for i in order:
        if chosen and total + lengths[i] > tokens:
            continue
        chosen.append(i)
        total += lengths[i]
    return sorted(chosen)


class InputStore:
    """The chosen samples' inputs of every decoder layer, on disk (one file per layer; the layer
    kwargs, the same for every layer, once)."""

    def __init__(self, directory: Path, chosen: list[int]):
        self.dir, self.chosen = Path(directory), chosen
        self.dir.mkdir(parents=True, exist_ok=True)

    def _file(self, n: int) -> Path:
        return self.dir / f"inputs_{n:03d}.safetensors"

    def save(self, n: int, states: list) -> None:
        """Before layer n runs: `states` are every sample's (hidden, kwargs)."""
        if not (self.dir / "kwargs.json").exists():
            skeleton, tensors = flatten([states[i][1] for i in self.chosen])
            save_file(tensors, str(self.dir / "kwargs.safetensors"))
            (self.dir / "kwargs.json").write_text(json.dumps(skeleton))  # last: marks the pair complete
        save_file({f"s{j}": states[i][0].contiguous() for j, i in enumerate(self.chosen)}, str(self._file(n)))

    def kwargs(self) -> list[dict]:
        return unflatten(json.loads((self.dir / "kwargs.json").read_text()), load_file(str(self.dir / "kwargs.safetensors")))

    def hidden(self, n: int) -> list[torch.Tensor]:
        t = load_file(str(self._file(n)))
        return [t[f"s{j}"] for j in range(len(self.chosen))]


def text_predictions(inputs: dict) -> torch.Tensor | None:
    """Which positions' next-token predictions count: those where neither the token nor the next one
    is a picture token (a VL model's output inside a picture is never read: training masks it, and
    generation never happens there), as the profile's perplexity counts them. None: every position."""
    vision = vision_mask(inputs)
    if vision is None:
        return None
    vision = vision.reshape(-1)
    return ~vision[:-1] & ~vision[1:]


HEAD_CHUNK = 1024  # positions per head pass: logits of a 100k vocabulary are 400 KB per position in fp32


def head_gradients(norm, head, finals: list[torch.Tensor], counted: list[torch.Tensor | None]) -> list[torch.Tensor]:
    """d sum_t log p(y_t) / d (last hidden state), y_t drawn from the model's distribution at t, over
    the positions `counted` (every position but the last when None); one seeded draw per sample. The
    head works per position (norm, then a linear map), so it runs `HEAD_CHUNK` positions at a time."""
    grads = []
    for i, (h, mask) in enumerate(zip(finals, counted)):
        h = h.detach().float().reshape(-1, h.shape[-1])
        n = h.shape[0] - 1  # positions that predict a next token
        keep = torch.ones(n, dtype=torch.bool) if mask is None else mask.reshape(-1)[:n]
        grad = torch.zeros_like(h)
        gen = torch.Generator().manual_seed(SEED + i)
        for start in range(0, n, HEAD_CHUNK):
            part = h[start:min(start + HEAD_CHUNK, n)].clone().requires_grad_(True)
            with torch.enable_grad():
                logp = torch.log_softmax(head(norm(part)).float(), -1)
                y = torch.multinomial(logp.detach().exp(), 1, generator=gen)
                ll = logp.gather(-1, y)[:, 0]
                ll[keep[start:start + part.shape[0]]].sum().backward()
            grad[start:start + part.shape[0]] = part.grad
        grads.append(grad.reshape(finals[i].shape))
    return grads


def _eigen(total: torch.Tensor, count: int, rank: int) -> OutputFisher:
    f = total / max(count, 1)
    values, vectors = torch.linalg.eigh(f)
    r = min(rank, f.shape[0])
    return OutputFisher(values[-r:].flip(0).clamp_min(0).float().contiguous(),
                        vectors[:, -r:].flip(1).float().contiguous(), float(f.trace()), count)


def layer_backward(runner, layer, n: int, inputs: list[torch.Tensor], kwargs: list[dict],
                   grads: list[torch.Tensor], rank: int = RANK) -> tuple[list[torch.Tensor], dict[str, OutputFisher]]:
    """Decoder layer n rerun with gradients on each sample's input and backpropagated from the
    gradient its output received: the gradients of its inputs, and F per modality of its experts."""
    layer.requires_grad_(False)
    sums: dict[str, list] = {}

    def watch(modality):
        def hook(module, args, out):
            out = hidden_states(out)
            if out.requires_grad and out.shape[0]:
                def on_grad(g):
                    g = g.reshape(-1, g.shape[-1]).double()
                    acc = sums.setdefault(modality, [0, 0])
                    acc[0] = acc[0] + g.T @ g
                    acc[1] += g.shape[0]
                out.register_hook(on_grad)
        return hook

    handles = [experts.register_forward_hook(watch(m)) for m, _, experts in runner.moe_blocks(layer)]
    out_grads = []
    try:
        for x, kw, g in zip(inputs, kwargs, grads):
            x = x.detach().float().requires_grad_(True)
            with torch.enable_grad():
                y = hidden_states(runner.run_layer(layer, n, x, kw))
                y.backward(g.to(y.dtype))
            out_grads.append(x.grad.detach())
    finally:
        for h in handles:
            h.remove()
    return out_grads, {m: _eigen(s, c, rank) for m, (s, c) in sums.items()}


def output_fishers(stream, store: InputStore, finals: list[torch.Tensor], counted: list[torch.Tensor | None],
                   rank: int = RANK, progress=None) -> dict[int, dict[str, OutputFisher]]:
    """F of every MoE layer and modality (module docstring), after `stream` ran forward over all
    samples with `store` saving the chosen samples' layer inputs; `finals` and `counted`: every
    sample's last hidden state and the predictions that count (`text_predictions`)."""
    norm, head = stream.runner.final_norm_and_head(stream.prefix)
    norm.requires_grad_(False)
    head.requires_grad_(False)
    grads = head_gradients(norm, head, [finals[i] for i in store.chosen], [counted[i] for i in store.chosen])
    stream.release_prefix()
    kwargs = store.kwargs()
    out: dict[int, dict[str, OutputFisher]] = {}
    for k, n in enumerate(reversed(range(stream.num_layers))):
        layer = stream.runner.build_layer(stream.ckpt, n)
        grads, fishers = layer_backward(stream.runner, layer, n, store.hidden(n), kwargs, grads, rank)
        if fishers:
            out[n] = fishers
        del layer
        if progress:
            progress(k + 1, stream.num_layers)
    return out


def save_fishers(directory: Path, fishers: dict[int, dict[str, OutputFisher]]) -> dict:
    """Write every layer's F to FILE; return the JSON record (trace and tokens per layer and modality)."""
    tensors, record = {}, {}
    for n, per in fishers.items():
        for m, f in per.items():
            tensors[f"{n}.{m}.values"], tensors[f"{n}.{m}.vectors"] = f.values, f.vectors
            record.setdefault(str(n), {})[m] = {"trace": f.trace, "tokens": f.tokens}
    save_file(tensors, str(Path(directory) / FILE))
    return record


def load_fishers(directory: Path, record: dict) -> dict[int, dict[str, OutputFisher]]:
    tensors = load_file(str(Path(directory) / FILE))
    return {int(n): {m: OutputFisher(tensors[f"{n}.{m}.values"], tensors[f"{n}.{m}.vectors"], r["trace"], r["tokens"])
                     for m, r in per.items()} for n, per in record.items()}
