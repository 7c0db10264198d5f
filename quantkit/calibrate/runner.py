"""Run a model one decoder layer at a time and accumulate, for every quantizable linear, the input
second moment H = XᵀX (fp32) with its token count.

The prefix (embeddings, vision tower, resampler, norm, head) embeds every sample and is dropped; then
one decoder layer and its statistics are in memory at a time, and the hidden states of all samples are
carried from layer to layer, so peak memory does not grow with depth. Routed experts see exactly the
tokens the model routes to them (the experts run through an instrumented copy of their eager loop,
which reads the router's own top-k), separately per modality, as `moe_mm_token_type_ids` splits them.

Expert coverage modes:
  routed  each expert's H from the tokens routed to it (natural top-k)
  all     each expert's H from every token of its modality (the layer output still uses real routing)
  auto    routed, but an expert with fewer than `min_tokens` routed tokens is calibrated on every
          token of its modality (default: no expert is left without data while a modality has tokens)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .. import host_memory
from ..adapters.base import Adapter, LayerRunner, hidden_states
from ..checkpoint import Checkpoint

MODES = ("auto", "routed", "all")


class _Captured(Exception):
    pass


class _Catcher(nn.Module):
    """Stands in for the first decoder layer: records what the model passes it, then stops."""

    def __init__(self):
        super().__init__()
        self.hidden = None
        self.kwargs = None

    def forward(self, hidden_states, *args, **kwargs):
        self.hidden, self.kwargs = hidden_states, kwargs
        raise _Captured


# XᵀX of inputs this wide or wider accumulates only its upper block triangle (blocks of this many
# columns; ~35 % fewer FLOPs, measured on the bench box) and is mirrored once the layer is done.
TRIANGLE_BLOCK = 512


@dataclass
class LayerCalibration:
    """The statistics of one decoder layer. `hessians[key]` is the running sum of XᵀX; `groups`
    maps an input group (`...self_attn.qkv_proj`, `...experts.5.gate_up_proj`, `...down_proj`) to
    its key, so experts calibrated on all tokens of their modality can share one matrix.
    While the layer runs, wide sums hold only their upper block triangle: `finish()` (LayerStream
    calls it when the layer is done) mirrors them; `hessian()` does too if needed."""

    layer: int
    hessians: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # group -> routed / all / dense
    routing: dict[str, dict] = field(default_factory=dict)
    # running sums of X per key: the mean input, which the allocator's MLP surrogate needs (a SwiGLU's
    # gate is mostly off for real inputs, not for zero-mean ones); absent in calibrations made before it
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    _unmirrored: set[str] = field(default_factory=set, repr=False)

    def add(self, key: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        if x.shape[0] == 0:
            return
        n = x.shape[1]
        h = self.hessians.get(key)
        if n < 2 * TRIANGLE_BLOCK:
            if h is None:
                self.hessians[key] = x.T @ x
            else:
                h.addmm_(x.T, x)  # in place: no [in, in] temporary per call
        else:
            if h is None:
                h = self.hessians[key] = torch.zeros(n, n)
            for r in range(0, n, TRIANGLE_BLOCK):  # block row r, from its diagonal block rightwards
                h[r:r + TRIANGLE_BLOCK, r:].addmm_(x[:, r:r + TRIANGLE_BLOCK].T, x[:, r:])
            self._unmirrored.add(key)
        self.tokens[key] = self.tokens.get(key, 0) + x.shape[0]
        s = self.sums.get(key)
        if s is None:
            self.sums[key] = x.sum(0)
        else:
            s.add_(x.sum(0))

    def mirror(self) -> None:
        """Copy the upper block triangle of every sum still missing its lower one onto it."""
        for key in self._unmirrored:
            h = self.hessians[key]
            n = h.shape[0]
            for r in range(0, n, TRIANGLE_BLOCK):
                c = r + TRIANGLE_BLOCK
                h[c:, r:c].copy_(h[r:c, c:].T)
        self._unmirrored.clear()

    def finish(self) -> None:
        """The layer is done: full sums, and the routing statistics in their saved form."""
        self.mirror()
        _finish_routing(self)

    def hessian_into(self, group: str, out: torch.Tensor) -> int:
        """Write the mean XᵀX of an input group into `out` (left as it is when it saw no tokens);
        returns the token count."""
        self.mirror()
        key = self.groups.get(group)
        n = self.tokens.get(key, 0) if key else 0
        if n:
            torch.div(self.hessians[key], n, out=out)
        return n

    def mean(self, group: str) -> torch.Tensor | None:
        """Mean X of an input group (None when it saw no tokens or the calibration predates the sums)."""
        key = self.groups.get(group)
        n = self.tokens.get(key, 0) if key else 0
        return self.sums[key] / n if n and key in self.sums else None

    def hessian(self, group: str) -> tuple[torch.Tensor | None, int]:
        """Mean XᵀX of an input group (None when it saw no tokens)."""
        key = self.groups.get(group)
        if key not in self.hessians:
            return None, 0
        out = torch.empty_like(self.hessians[key])
        n = self.hessian_into(group, out)
        return (out, n) if n else (None, 0)


class _LayerHooks:
    """Forward hooks that fill a LayerCalibration while the real layer runs."""

    def __init__(self, runner: LayerRunner, adapter: Adapter, layer_idx: int, module: nn.Module,
                 calib: LayerCalibration, mode: str):
        self.runner, self.adapter, self.n, self.calib, self.mode = runner, adapter, layer_idx, calib, mode
        self.experts: dict[str, nn.Module] = {}
        # auto mode: every token's expert input per modality, kept so that experts under min_tokens
        # get calibrated on all of them afterwards without a second forward pass of the layer
        self.modality_inputs: dict[str, list[torch.Tensor]] = {}
        self.handles = []
        self._last_input: dict[str, torch.Tensor] = {}
        prefix = runner.layer_prefix(layer_idx)
        for rel, sub in module.named_modules():
            if isinstance(sub, nn.Linear):
                group = adapter.input_group(prefix + rel)
                self.handles.append(sub.register_forward_pre_hook(self._linear_hook(group)))
        for modality, gate, experts in runner.moe_blocks(module):
            self.handles.append(gate.register_forward_hook(self._router_hook(modality)))
            # the experts run through _experts_forward while calibrating: it computes each expert's
            # down-projection input once, for the layer output and for the statistics
            experts.forward = self._experts_forward(modality, experts)
            self.experts[modality] = experts

    def close(self):
        for h in self.handles:
            h.remove()
        for experts in self.experts.values():
            if "forward" in experts.__dict__:
                del experts.forward

    def _linear_hook(self, group: str):
        def hook(module, args):
            x = args[0]
            if self._last_input.get(group) is x:  # q/k/v (gate/up) read the same tensor: count once
                return
            self._last_input[group] = x
            self.calib.groups[group] = group
            self.calib.sources[group] = "dense"
            self.calib.add(group, x)
        return hook

    def _router_hook(self, modality: str):
        def hook(module, args, output):
            logits, weights = output[0], output[1]
            if logits.numel() == 0:
                return
            p = torch.softmax(logits.float(), -1)
            stats = self.calib.routing.setdefault(modality, {"tokens": 0, "entropy_sum": 0.0, "topk_weight_sum": None})
            stats["tokens"] += logits.shape[0]
            stats["entropy_sum"] += float(-(p * p.clamp_min(1e-30).log()).sum(-1).sum())
            w = weights.float().sort(-1, descending=True).values.sum(0)
            stats["topk_weight_sum"] = w if stats["topk_weight_sum"] is None else stats["topk_weight_sum"] + w
        return hook

    def _experts_forward(self, modality: str, experts: nn.Module):
        """The fused experts' forward with the statistics taken on the way: the eager loop of
        transformers' experts module (gather each expert's routed tokens, gate_up, act * up, down,
        weighted index_add), recording H of each expert's gate/up input and down input."""
        def forward(hidden_states, top_k_index, top_k_weights):
            out = torch.zeros_like(hidden_states)
            if hidden_states.shape[0] == 0:
                return out
            x = hidden_states.float()
            n_exp = experts.gate_up_proj.shape[0]
            counts = torch.bincount(top_k_index.reshape(-1), minlength=n_exp)[:n_exp]
            stats = self.calib.routing.setdefault(modality, {})
            stats["expert_tokens"] = (stats.get("expert_tokens", torch.zeros(n_exp, dtype=torch.long)) + counts)
            if self.mode in ("all", "auto"):
                self.calib.add(self._all_gate_up_key(modality), x)
            if self.mode == "auto":
                self.modality_inputs.setdefault(modality, []).append(x)
            for k in counts.nonzero().flatten().tolist():
                token_idx, pos = torch.where(top_k_index == k)
                xk = x[token_idx]
                h = _expert_hidden(experts, k, xk)
                if self.mode != "all":
                    self._record(modality, k, xk, h, "routed")
                y = nn.functional.linear(h, experts.down_proj[k]) * top_k_weights[token_idx, pos, None]
                out.index_add_(0, token_idx, y.to(out.dtype))
            if self.mode == "all":
                for k in range(n_exp):
                    self._record(modality, k, x, _expert_hidden(experts, k, x), "all")
            return out
        return forward

    def supplement(self, min_tokens: int) -> None:
        """auto mode, after the pass: experts under `min_tokens` routed tokens get every token of
        their modality (the layer's outputs keep the real routing)."""
        for modality, stats in self.calib.routing.items():
            counts = stats.get("expert_tokens")
            inputs = self.modality_inputs.get(modality)
            if counts is None or not inputs:
                continue
            need = [k for k, c in enumerate(counts.tolist()) if c < min_tokens]
            if need:
                x = torch.cat(inputs)
                for k in need:
                    self._record(modality, k, x, _expert_hidden(self.experts[modality], k, x), "all")
        self.modality_inputs.clear()

    def _all_gate_up_key(self, modality: str) -> str:
        return f"{self.runner.layer_prefix(self.n)}mlp.experts.{modality}.all_tokens.gate_up_proj"

    def _record(self, modality: str, k: int, x: torch.Tensor, h: torch.Tensor, source: str):
        """Expert k's statistics: gate/up input x (routed; "all" shares the modality's matrix) and
        down input h = act(gate) * up."""
        gate_up = self.adapter.input_group(self.runner.expert_module_name(self.n, modality, k, "gate"))
        down = self.runner.expert_module_name(self.n, modality, k, "down")
        down_key = down if source == "routed" else f"{down}.all_tokens"
        gate_up_key = gate_up if source == "routed" else self._all_gate_up_key(modality)
        if source == "routed":
            self.calib.add(gate_up_key, x)
        self.calib.add(down_key, h)
        self.calib.groups[gate_up], self.calib.groups[down] = gate_up_key, down_key
        self.calib.sources[gate_up] = self.calib.sources[down] = source


def _expert_hidden(experts: nn.Module, k: int, x: torch.Tensor) -> torch.Tensor:
    """act(gate) * up of expert k on tokens x: its down projection's input."""
    gate, up = nn.functional.linear(x, experts.gate_up_proj[k]).chunk(2, dim=-1)
    return experts.act_fn(gate) * up


@dataclass
class StreamResult:
    hidden: list[torch.Tensor]  # last hidden states of every sample (before the final norm)
    layers: int


class LayerStream:
    """Drives the prefix and then each decoder layer over all samples."""

    def __init__(self, ckpt: Checkpoint, adapter: Adapter):
        self.ckpt, self.adapter = ckpt, adapter
        self.runner = adapter.runner()
        self._prefix = None
        self.num_layers = adapter.shape.num_layers
        host_memory.keep_large_allocations_on_mmap()  # per-layer memory is returned (host_memory.py)

    @property
    def prefix(self):
        """Embeddings, vision tower, resampler, norm and head (loaded on first use; `run` drops it
        once every sample is embedded, so it does not sit in memory beside the layers)."""
        if self._prefix is None:
            self._prefix = self.runner.prefix_model(self.ckpt)
        return self._prefix

    def release_prefix(self) -> None:
        self._prefix = None
        host_memory.trim()

    @torch.no_grad()
    def embed(self, inputs: dict) -> tuple[torch.Tensor, dict]:
        """One sample through embeddings, vision tower and resampler: the first layer's inputs."""
        layers = self.runner.decoder_layers(self.prefix)
        catcher = _Catcher()
        layers.append(catcher)
        handles, extra = self.runner.watch_prefix(self.prefix)  # what the layer loop adds (DeepStack)
        try:
            self.prefix(**inputs, use_cache=False)
        except _Captured:
            pass
        finally:
            del layers[-1]
            for h in handles:
                h.remove()
        if catcher.hidden is None:
            raise RuntimeError("the model never reached its first decoder layer")
        kwargs = {k: v for k, v in catcher.kwargs.items() if k not in ("cache", "past_key_values")}
        return catcher.hidden.float(), {**kwargs, **extra}

    @torch.no_grad()
    def run(self, samples: list[dict], *, mode: str = "auto", min_tokens: int = 64,
            on_layer: Callable[[int, LayerCalibration], dict | None] | None = None,
            collect: bool = True, progress: Callable[[int, int], None] | None = None,
            start: tuple[int, dict] | None = None,
            after_layer: Callable[[int, dict], None] | None = None,
            before_layer: Callable[[int, list], None] | None = None) -> StreamResult:
        """Stream every layer. `before_layer(n, states)` sees every sample's inputs of layer n
        (hidden states, layer kwargs) before it runs. `on_layer(n, calib)` receives each layer's statistics; if it returns
        replacement weights (by on-disk name) the layer is rebuilt with them and its outputs
        recomputed before moving on (sequential quantization). `after_layer(n, snapshot)` gets what
        continuing needs (the next layer's inputs, the kernels the prefix model chose): a checkpoint;
        `start=(n, snapshot)` continues from layer n with it, without the prefix model."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if start is None:
            first, states = 0, [self.embed(s) for s in samples]
            self.release_prefix()
        else:
            first, states = start[0], [(h, kw) for h, kw in start[1]["states"]]
            self.use_kernels(start[1]["kernels"])
        self.mark(None, "embed")
        for n in range(first, self.num_layers):
            if before_layer:
                before_layer(n, states)
            states = self.step(n, states, mode=mode, min_tokens=min_tokens, on_layer=on_layer, collect=collect)
            if after_layer:
                after_layer(n, {"states": states, "kernels": self.kernels()})
            if progress:
                progress(n + 1, self.num_layers)
        return StreamResult([h for h, _ in states], self.num_layers)

    @torch.no_grad()
    def step(self, n: int, states: list, *, mode: str = "auto", min_tokens: int = 64,
             on_layer: Callable[[int, LayerCalibration], dict | None] | None = None,
             collect: bool = True) -> list:
        """Layer `n` over every sample: build it, run it with the calibration hooks, hand its
        statistics to `on_layer`, return the next layer's inputs. At most one layer and one layer's
        statistics are alive at a time: the layer is freed before `on_layer` (the solver needs the
        memory), the statistics when it returns."""
        layer = self.runner.build_layer(self.ckpt, n)
        self.mark(n, "load")
        calib = self.new_calibration(n) if collect else None
        outputs, hooks = self._forward(layer, n, states, calib, mode)
        self.mark(n, "forward")
        if hooks is not None and mode == "auto":
            hooks.supplement(min_tokens)
        del hooks
        if calib is not None:
            calib.finish()
        self.mark(n, "supplement")
        del layer
        replacement = on_layer(n, calib) if on_layer else None
        del calib
        self.mark(n, "on_layer")
        if replacement:
            layer = self.runner.build_layer(self.ckpt, n, overrides=replacement)
            outputs, _ = self._forward(layer, n, states, None, mode)
            del layer
            self.mark(n, "reforward")
        host_memory.trim()
        return [(o, kw) for o, (_, kw) in zip(outputs, states)]

    _KERNEL_FIELDS = ("_attn_implementation", "_experts_implementation")

    def kernels(self) -> dict:
        """The attention / experts kernels layers are built with (set when the prefix model loads)."""
        text = self.runner.text_config()
        return {f: getattr(text, f, None) for f in self._KERNEL_FIELDS}

    def use_kernels(self, kernels: dict) -> None:
        text = self.runner.text_config()
        for f, v in kernels.items():
            if f in self._KERNEL_FIELDS and v is not None:
                setattr(text, f, v)

    def new_calibration(self, n: int) -> LayerCalibration:
        return LayerCalibration(n)

    def mark(self, n: int | None, segment: str) -> None:
        """Called at the end of each segment of a step (load, forward, supplement, on_layer,
        reforward) and after embedding; a no-op here, a timer in the benchmark."""

    def _forward(self, layer, n, states, calib, mode):
        hooks = _LayerHooks(self.runner, self.adapter, n, layer, calib, mode) if calib else None
        try:
            return [hidden_states(self.runner.run_layer(layer, n, h, kw)).float() for h, kw in states], hooks
        finally:
            if hooks:
                hooks.close()

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        norm, head = self.runner.final_norm_and_head(self.prefix)
        return head(norm(hidden))


def _finish_routing(calib: LayerCalibration) -> None:
    """Turn running sums into the per-modality routing statistics that get saved."""
    for modality, s in list(calib.routing.items()):
        n = int(s.get("tokens", 0))
        counts = s.get("expert_tokens")
        topk = s.get("topk_weight_sum")
        calib.routing[modality] = {
            "tokens": n,
            "tokens_per_expert": counts.tolist() if counts is not None else [],
            "router_entropy": s["entropy_sum"] / n if n else None,
            "mean_topk_weights": (topk / n).tolist() if n and topk is not None else [],
        }
