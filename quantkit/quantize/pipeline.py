"""Turn a plan into output tensors, one layer at a time: RTN, or GPTQ from layer statistics.

Tensors that read the same input with the same scheme (an expert's gate and up; q, k and v) are
one *unit*: stacked along their output rows and solved as one matrix, since GPTQ quantizes rows
independently given the shared Hessian (same codes as solving each alone, one factorisation instead
of two or three). Units of one layer that share a kind, modality, shapes and scheme (the experts of
a modality) are solved as one batch (batched Cholesky and block updates); every expert that falls
back (no calibration tokens) is recorded with its reason. The plan's format supplies the `Backend`
that solves and emits weights (its own tensors: GPTQ's packed ints, GGML blocks, ...).

Producers (`rtn_produce`, `gptq_from_calibration`, `gptq_on_the_fly`) are what `quantkit quantize` and
the bench call: each takes `add` and returns what the manifest records about the run (fallbacks, solver figures).
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Callable

import torch

from ..adapters.base import Adapter
from ..calibrate.runner import LayerCalibration
from ..checkpoint import Checkpoint
from ..errors import CalibrationError
from ..format import Add
from ..plan import Plan, TensorPlan
from ..progress import report
from ..runstate import RunProgress
from ..scheme import QuantScheme
from . import gptq
from .gptq import gptq_quantize
from .rtn import quantize_rtn, quantize_rtn_experts

# Matrices solved together per batch: at most MAX_BATCH, and within BATCH_BYTES of solver working
# memory (about 3 [out, in] + 3 [in, in] fp32 arrays per matrix: weights, errors, codes; Hessian, its
# factor, a copy). Batching buys little on a CPU at real widths (bench/README.md): memory decides.
MAX_BATCH = 16
BATCH_BYTES = 3 << 29  # 1.5 GiB


def batch_size(out_features: int, in_features: int) -> int:
    """Largest batch within MAX_BATCH and BATCH_BYTES, a multiple of the solver's worker threads
    (each takes an equal share) where the budget allows."""
    per_matrix = 4 * 3 * (out_features * in_features + in_features * in_features)
    size = max(1, min(MAX_BATCH, BATCH_BYTES // per_matrix))
    workers = gptq.SOLVE_WORKERS or torch.get_num_threads()
    return size - size % workers if size >= workers else size


def _split_evenly(members: list, size: int, workers: int) -> list[list]:
    """members in as few batches of at most `size` as possible, equal in size (64 experts at 9 per
    batch: 8 of 8, not 7 of 9 and 1 of 1), each a multiple of `workers` where possible, so no worker
    thread waits on another's extra matrix."""
    n_batches = -(-len(members) // size)
    even = -(-len(members) // n_batches)
    if even % workers and even + workers - even % workers <= size:
        even += workers - even % workers
    return [members[i:i + even] for i in range(0, len(members), even)]


class Backend:
    """Solves a batch of same-scheme matrices W [B, out, in] and emits each result as output tensors.
    The solvers here return `QuantizedWeight`s on the scheme's own grid; a format overrides `emit`
    (how a result becomes its tensors) and, where its grid differs, the solvers."""

    def rtn(self, scheme: QuantScheme, W: torch.Tensor) -> list:
        return quantize_rtn_experts(W, scheme.bits, scheme.group_size, scheme.sym)

    def rtn_one(self, scheme: QuantScheme, w: torch.Tensor):
        return quantize_rtn(w, scheme.bits, scheme.group_size, scheme.sym)

    def gptq(self, scheme: QuantScheme, W: torch.Tensor, H: torch.Tensor) -> tuple[list, list[int]]:
        """Per-matrix results and the indices that fell back to RTN (all-zero Hessian)."""
        res = gptq_quantize(W, H, bits=scheme.bits, group_size=scheme.group_size, sym=scheme.sym,
                            act_order=scheme.desc_act)
        return res.split(), res.fallback_experts

    def emit(self, entry: TensorPlan, result) -> dict:
        """{output tensor name: tensor (or a format's own value)} for one planned tensor's result."""
        raise NotImplementedError


def backend_for(plan: Plan) -> Backend:
    return plan.format.backend()


def emit_unlayered(ckpt: Checkpoint, plan: Plan, add: Add) -> None:
    """Tensors outside decoder layers (embeddings, vision tower, norms): kept, or RTN if planned."""
    backend = backend_for(plan)
    for e in plan.entries:
        if e.role.layer is None:
            t = ckpt.read(e.name)
            add({e.name: t} if not e.quantized else backend.emit(e, backend.rtn_one(e.scheme, t.float())))


def rtn_produce(ckpt: Checkpoint, plan: Plan, add: Add, progress: RunProgress | None = None) -> dict:
    """Round-to-nearest, one tensor in memory at a time; a checkpoint after each layer's tensors
    (`progress.step` = entries done)."""
    backend = backend_for(plan)
    start = _resume(progress) or 0
    entries = plan.entries
    for i in range(start, len(entries)):
        e = entries[i]
        t = ckpt.read(e.name)
        if not e.quantized:
            add({e.name: t})
        else:
            add(backend.emit(e, backend.rtn_one(e.scheme, t.float())))
        if progress is not None and i + 1 < len(entries) and entries[i + 1].role.layer != e.role.layer:
            progress.save(i + 1)
    return {}


def gptq_from_calibration(ckpt: Checkpoint, plan: Plan, adapter: Adapter, layers: Callable[[int], LayerCalibration],
                          add: Add, progress: RunProgress | None = None, *, log: Callable[[str], None] = lambda m: None,
                          observe: "BatchObserver | None" = None) -> dict:
    """GPTQ from saved statistics (`layers(n)`: layer n's `LayerCalibration`), a checkpoint after each
    layer; returns the record."""
    q = LayerQuantizer(ckpt, plan, adapter, observe=observe, log=log)
    done = _resume(progress, q)
    if done is None:
        emit_unlayered(ckpt, plan, add)
    for n in range(0 if done is None else done + 1, adapter.shape.num_layers):
        q(n, layers(n), add)
        if progress is not None:
            progress.save(n, q.state())
        report(log, "quantize", n + 1, adapter.shape.num_layers)
    return q.record(log)


def gptq_on_the_fly(ckpt: Checkpoint, plan: Plan, adapter: Adapter, stream, samples: list[dict], add: Add,
                    progress: RunProgress | None = None, *, mode: str = "auto", min_tokens: int = 64,
                    sequential: bool = False, log: Callable[[str], None] = lambda m: None,
                    observe: "BatchObserver | None" = None) -> dict:
    """GPTQ calibrated while streaming the model (`stream`: a calibrate.runner.LayerStream) over
    `samples`; with `sequential`, each layer's statistics come from the already-quantized layers. A
    checkpoint after each layer holds the hidden states entering the next one."""
    q = LayerQuantizer(ckpt, plan, adapter, observe=observe, log=log)
    done = _resume(progress, q)
    start = None
    if done is None:
        emit_unlayered(ckpt, plan, add)
    else:
        start = (done + 1, progress.restored)
    stream.run(samples, mode=mode, min_tokens=min_tokens, start=start,
               on_layer=lambda n, calib: q(n, calib, add, want_dequantized=sequential) or None,
               after_layer=None if progress is None else lambda n, states: progress.save(n, q.state(), states),
               progress=lambda done, total: report(log, "quantize", done, total))
    return q.record(log)


def _resume(progress: RunProgress | None, q: "LayerQuantizer | None" = None) -> int | None:
    """The step the run's last checkpoint recorded (None: start from the beginning), with the writer
    and the quantizer's record put back as they were then; the saved tensors on `progress.restored`."""
    if progress is None or progress.step is None:
        return None
    progress.restored = progress.restore()
    if q is not None:
        q.load_state(progress.record())
    return progress.step


# `observe(batch, seconds, solver_seconds)` after each solved batch (the bench times kinds with it).
BatchObserver = Callable[[list[list[TensorPlan]], float, float], None]


class LayerQuantizer:
    """Quantizes the planned tensors of one decoder layer from its statistics."""

    def __init__(self, ckpt: Checkpoint, plan: Plan, adapter: Adapter, observe: BatchObserver | None = None,
                 log: Callable[[str], None] = lambda m: None):
        self.ckpt, self.plan, self.adapter, self.observe, self.log = ckpt, plan, adapter, observe, log
        self.by_layer: dict[int, list[TensorPlan]] = defaultdict(list)
        for e in plan.entries:
            if e.role.layer is not None:
                self.by_layer[e.role.layer].append(e)
        self.fallbacks: list[dict] = []
        self.solver: dict[str, float] = defaultdict(float)
        self.backend = backend_for(plan)

    def __call__(self, n: int, calib: LayerCalibration | None, add: Add,
                 want_dequantized: bool = False) -> dict[str, torch.Tensor]:
        """Emit layer `n`'s tensors; return its dequantized weights by on-disk name if asked."""
        entries = self.by_layer.get(n, [])
        dequantized = {}
        for e in entries:
            if not e.quantized:
                add({e.name: self.ckpt.read(e.name)})
        batches = solve_batches([e for e in entries if e.quantized], self.adapter.input_group)
        total, solved = sum(len(unit) for batch in batches for unit in batch), 0
        for batch in batches:
            # read per batch: the layer's bf16 weights are never all in memory beside the statistics
            weights = self.ckpt.read_many([e.name for unit in batch for e in unit])
            t0, before = time.perf_counter(), self.solver["seconds"]
            results = self._solve(batch, weights, calib)
            if self.observe is not None:
                self.observe(batch, time.perf_counter() - t0, self.solver["seconds"] - before)
            solved += sum(len(unit) for unit in batch)
            report(self.log, f"layer {n} tensors", solved, total, "tensor")
            del weights
            for unit, result in zip(batch, results):
                row = 0
                for e in unit:  # the unit's rows back to its tensors
                    qw = result.rows(row, row + e.shape[0]) if len(unit) > 1 else result
                    row += e.shape[0]
                    add(self.backend.emit(e, qw))
                    if want_dequantized:
                        dequantized[e.name] = qw.dequantize()
        return dequantized

    def state(self) -> dict:
        """What a checkpoint keeps of this quantizer (quantkit.runstate)."""
        return {"fallbacks": self.fallbacks, "solver": dict(self.solver)}

    def load_state(self, state: dict) -> None:
        self.fallbacks = list(state.get("fallbacks", []))
        self.solver.update(state.get("solver", {}))

    def record(self, log: Callable[[str], None] = lambda m: None) -> dict:
        """What the manifest records about the run: every RTN fallback with its reason, solver figures;
        one warning line when something fell back."""
        if self.fallbacks:
            by_role = Counter(f["role"] for f in self.fallbacks)
            log("warning: " + ", ".join(f"{n} {role} tensors" for role, n in sorted(by_role.items()))
                + " had no calibration tokens and were quantized with RTN instead of GPTQ (recorded in quantkit.json)")
        return {"fallbacks": self.fallbacks,
                "solver": {"matrices": int(self.solver["matrices"]), "seconds": round(self.solver["seconds"], 3)}}

    def _solve(self, batch: list[list[TensorPlan]], weights: dict, calib: LayerCalibration | None) -> list:
        """One result per unit, covering the unit's tensors' rows in order."""
        s = batch[0][0].scheme
        W = batch_weights(batch, weights)
        if s.method == "rtn":
            return self.backend.rtn(s, W)
        if calib is None:
            raise CalibrationError("GPTQ needs layer statistics: pass --calib DIR or let quantize calibrate")
        H = batch_hessians(batch, calib, self.adapter.input_group)
        t0 = time.perf_counter()
        results, fallback_units = self.backend.gptq(s, W, H)
        self.solver["seconds"] += time.perf_counter() - t0
        self.solver["matrices"] += sum(len(unit) for unit in batch)
        for i in fallback_units:
            for e in batch[i]:
                src = calib.sources.get(self.adapter.input_group(e.module), "none")
                self.fallbacks.append({"tensor": e.name, "role": e.role.label, "fallback": "rtn",
                                       "reason": "no calibration tokens reached this module"
                                                 + (f" (no {e.role.modality} tokens in the samples)"
                                                    if e.role.modality and src == "none" else "")})
        return results


def batch_weights(batch: list[list[TensorPlan]], weights: dict) -> torch.Tensor:
    """[B, rows of a unit, in] fp32: each unit's tensors stacked along the rows, upcast straight into
    place (one pass, no stack/cat copies)."""
    rows, cols = sum(e.shape[0] for e in batch[0]), batch[0][0].shape[1]
    W = torch.empty(len(batch), rows, cols)
    for i, unit in enumerate(batch):
        row = 0
        for e in unit:
            W[i, row:row + e.shape[0]].copy_(weights[e.name])
            row += e.shape[0]
    return W


def batch_hessians(batch: list[list[TensorPlan]], calib: LayerCalibration,
                   input_group: Callable[[str], str]) -> torch.Tensor:
    """[B, in, in]: each unit's mean XᵀX; all zero for a unit that saw no tokens (the solver flags it)."""
    cols = batch[0][0].shape[1]
    H = torch.zeros(len(batch), cols, cols)
    for i, unit in enumerate(batch):
        calib.hessian_into(input_group(unit[0].module), H[i])
    return H


def solve_batches(entries: list[TensorPlan], input_group: Callable[[str], str]) -> list[list[list[TensorPlan]]]:
    """Units (tensors of one input group with one scheme, in plan order), then batches of units with
    the same kind, modality, shapes and scheme (the experts of a modality), of `batch_size` each."""
    units: dict[tuple, list[TensorPlan]] = defaultdict(list)
    for e in entries:
        units[(input_group(e.module), e.scheme)].append(e)
    groups: dict[tuple, list[list[TensorPlan]]] = defaultdict(list)
    for (group, scheme), unit in units.items():
        first = unit[0].role
        if first.kind == "routed_expert":
            key = (first.kind, first.modality, tuple((e.role.proj, e.shape) for e in unit), scheme)
        else:
            key = (group, scheme)
        groups[key].append(unit)
    out = []
    workers = gptq.SOLVE_WORKERS or torch.get_num_threads()
    for members in groups.values():
        unit = members[0]
        out += _split_evenly(members, batch_size(sum(e.shape[0] for e in unit), unit[0].shape[1]), workers)
    return out
