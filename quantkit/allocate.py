"""`--target-size` / `--vram`: the bits of each unit from one saved calibration, exact under a byte budget.

Objective. For a routed-expert tensor W (input group with mean XᵀX = H over the tokens it saw) at a
candidate width b, the output error of round-to-nearest is e_RTN(W, b) = tr(ΔW H ΔWᵀ), ΔW = W - RTN_b(W)
(`rows`: an evenly spaced subset of W's rows, scaled up: unbiased, and exact when rows >= out). Weighted
by the tokens the router sends to that expert (calibration routing stats, +1 so an expert the samples
never reached still counts), divided by the layer's tokens, and multiplied by the mean squared routing
weight (the expert's output is scaled by it), it is the expected error per token.
Each error in a layer's expert output is weighed by how much it moves the predictions: the layer's
output Fisher F per modality (calibrate/sensitivity.py, from a backward pass at calibration): down_proj's
row errors by diag F, gate/up's output errors (below) by the full F; the objective then estimates 2x the
KL per position. A calibration without it (older, or `--sensitivity-tokens 0`) weighs every layer alike
and per token of each modality, and the notes say so. On the trained text reference
(bench.unit_sensitivity) the rank correlation of the objective with the KL of each unit rounded alone
went from 0.48 to 0.95 with F.
GPTQ (the base profile's method) is estimated per layer, modality and input group: on the expert with
the most routed tokens, GPTQ runs on its own H at every candidate width and e_GPTQ / e_RTN is measured;
every expert of that layer/modality/input group gets e_RTN x that ratio at that width.

gate/up errors live in the expert's intermediate space, down's in the hidden space: each gate/up error
is carried to the expert's output by a factor measured per layer and modality on the most-routed
expert (`mlp_output_factors`, on surrogate inputs with the calibrated mean and second moment), so
llama.cpp's per-projection units compare errors in one space.

Only routed experts are allocated. Shared experts, the dense MLP and attention stay
as the base profile says: measured on the VL reference, letting the allocator trade shared-expert and
dense-MLP bits against routed-expert bits under this objective (shared experts weighted 1 per token,
their GPTQ error measured directly) gave 2.4x uniform 3-bit's KL instead of less, so the per-token
output error alone undervalues the tensors every token passes through; q/k errors act through the
attention scores, which the objective does not model at all.

Units follow the runtime (`--runtime`, default: the format's first runtime), so the result is servable:
vllm -> one scheme per FusedMoE layer and modality; llama.cpp -> one type per stacked expert tensor
(layer x gate/up/down); transformers -> one per expert. Candidates come from the format (`Format.candidate_schemes`), bytes from its
`plan_tensor`. The allocation is an exact Pareto knapsack over (bytes, error); the result is a Profile
(one generated rule per unit, by tensor-name regex, before the base profile's rules), so plan, formats
and verify handle it unchanged.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .adapters import Adapter
from .calibrate.sensitivity import OutputFisher
from .checkpoint import Checkpoint
from .errors import PlanRefused, UsageError
from .plan import TensorPlan, build_plan
from .profiles import Profile, Rule
from .quantize.pipeline import Backend
from .quantize.rtn import quantize_rtn
from .roles import ROUTED_EXPERT
from .scheme import QuantScheme, fit_group, scheme_label
from .serving import ServingShape, max_image_patches, vram_estimate
from .units import human_bytes, parse_size

RUNTIMES = ("vllm", "llama.cpp", "transformers")
DEFAULT_ROWS = 96  # rows of each tensor the RTN error is measured on (all of them when fewer)
MAX_FRONTIER = 2_000_000  # Pareto points kept per step before byte costs are rounded (see _knapsack)


@dataclass
class Unit:
    key: str  # e.g. `layer 3 text experts`, `layer 3 gate`, `layer 3 text expert 7`
    entries: list[TensorPlan]
    schemes: list[QuantScheme] = field(default_factory=list)
    nbytes: list[int] = field(default_factory=list)
    storage: list[str | None] = field(default_factory=list)  # the format's name for each width (GGUF: Q4_K)
    rtn_error: list[float] = field(default_factory=list)
    error: list[float] = field(default_factory=list)  # the objective: RTN, or GPTQ as estimated

    def regex(self) -> str:
        return "^(?:" + "|".join(re.escape(e.name) for e in self.entries) + ")$"

    def label(self, i: int) -> str:
        """`gptq-w4g32-asym-s6 (Q4_K)`: width i's scheme, and its storage where the format names one."""
        store = self.storage[i]
        return scheme_label(self.schemes[i]) + (f" ({store})" if store else "")


@dataclass
class Allocation:
    runtime: str
    budget: int  # weight bytes allowed
    fixed_bytes: int  # bytes of everything the allocator does not choose
    units: list[Unit]
    choice: list[int]
    method: str  # rtn or gptq (the estimate used)
    rows: int | None
    vram: dict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def predicted_bytes(self) -> int:
        return self.fixed_bytes + sum(u.nbytes[c] for u, c in zip(self.units, self.choice))

    @property
    def error(self) -> float:
        return sum(u.error[c] for u, c in zip(self.units, self.choice))

    def uniform(self) -> list[dict]:
        """Each width everywhere (where every unit has it): bytes and objective, for comparison."""
        out = []
        for i, s in enumerate(self.units[0].schemes):
            if all(len(u.schemes) > i and u.schemes[i].bits == s.bits for u in self.units):
                out.append({"scheme": self.units[0].label(i), "bytes": self.fixed_bytes + sum(u.nbytes[i] for u in self.units),
                            "error": sum(u.error[i] for u in self.units)})
        return out

    def profile(self, base: Profile) -> Profile:
        rules = tuple(Rule((ROUTED_EXPERT,), u.regex(), u.schemes[c], f"allocated: {u.key}")
                      for u, c in zip(self.units, self.choice))
        return replace(base, name=f"{base.name}-alloc", rules=rules + base.rules,
                       description=f"bits per {self.runtime} unit for {human_bytes(self.budget)} of weights")

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "budget_bytes": self.budget, "predicted_bytes": self.predicted_bytes,
                "fixed_bytes": self.fixed_bytes, "objective": self.error, "error_estimate": self.method,
                "rows": self.rows, "vram": self.vram, "uniform": self.uniform(),
                "units": [{"unit": u.key, "scheme": scheme_label(u.schemes[c]), "storage": u.storage[c],
                           "bytes": u.nbytes[c], "error": u.error[c]} for u, c in zip(self.units, self.choice)]}

    def lines(self) -> list[str]:
        out = [f"allocation for {self.runtime} ({self.method} error estimate): {len(self.units)} units, "
               f"budget {human_bytes(self.budget)} of weights, predicted {human_bytes(self.predicted_bytes)} "
               f"({self.predicted_bytes} bytes), objective {self.error:.4g}"]
        if self.vram:
            out.append(f"  serving VRAM at context {self.vram['context']}: {human_bytes(self.vram['total'])} "
                       f"(weights {human_bytes(self.vram['weights'])} + KV {human_bytes(self.vram['kv_cache'])} + "
                       f"activations {human_bytes(self.vram['activations'])} + runtime "
                       f"{human_bytes(self.vram['runtime_overhead'])})")
        for u, c in zip(self.units, self.choice):
            out.append(f"  {u.key:<32} {u.label(c):<29} {human_bytes(u.nbytes[c]):>10}  "
                       f"error {u.error[c]:.3g}")
        for row in self.uniform():
            out.append(f"  uniform {row['scheme']:<29} {human_bytes(row['bytes']):>10}  objective {row['error']:.4g}")
        return out + [f"  note: {n}" for n in self.notes]


# -- units -------------------------------------------------------------------------------------------

def unit_key(runtime: str, e: TensorPlan) -> tuple:
    r = e.role
    if runtime == "vllm":
        return (r.layer, r.modality)
    if runtime == "llama.cpp":
        return (r.layer, r.proj)
    return (r.layer, r.modality, r.expert)


def _unit_name(runtime: str, key: tuple) -> str:
    if runtime == "vllm":
        return f"layer {key[0]} {key[1]} experts"
    if runtime == "llama.cpp":
        return f"layer {key[0]} {key[1]}_exps"
    return f"layer {key[0]} {key[1]} expert {key[2]}"


def check_runtime(fmt, runtime: str | None) -> str:
    runtime = runtime or fmt.runtimes[0]
    if runtime not in RUNTIMES or runtime not in fmt.runtimes:
        ok = [r for r in fmt.runtimes if r in RUNTIMES]
        raise UsageError(f"--runtime {runtime}: the {fmt.name} format serves {' or '.join(ok)}")
    return runtime


def build_units(ckpt: Checkpoint, adapter: Adapter, plan, runtime: str) -> list[Unit]:
    """The routed-expert tensors the base plan quantizes, grouped by the runtime's unit, each with its
    candidate schemes (the format's) and their bytes (the format's plan_tensor)."""
    fmt = plan.format
    groups: dict[tuple, list[TensorPlan]] = defaultdict(list)
    for e in plan.entries:
        if e.role.kind == ROUTED_EXPERT and e.quantized:
            groups[unit_key(runtime, e)].append(e)
    if not groups:
        raise PlanRefused(f"profile {plan.profile.name} quantizes no routed experts; nothing to allocate")
    units = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        u = Unit(_unit_name(runtime, key), groups[key])
        first = u.entries[0]  # the profile's scheme (before the format fits its group to a shape)
        for cand in fmt.candidate_schemes(plan.profile.scheme_for(first.name, first.role)):
            try:
                planned = [fmt.plan_tensor(ckpt.info(e.name), e.role, cand, adapter) for e in u.entries]
            except (PlanRefused, ValueError):
                continue  # a width this tensor's shape cannot take in this format
            u.schemes.append(cand)
            u.nbytes.append(sum(t.planned_bytes for t in planned))
            u.storage.append(planned[0].storage)
        if not u.schemes:
            raise PlanRefused(f"{u.key}: no candidate width of the {fmt.name} format fits its tensors")
        units.append(u)
    return units


# -- the error of each width ---------------------------------------------------------------------------

def _sampled_rows(n: int, rows: int | None) -> torch.Tensor | None:
    if rows is None or rows >= n:
        return None
    return torch.linspace(0, n - 1, rows).round().long().unique()


def tensor_error(w: torch.Tensor, h: torch.Tensor, scheme: QuantScheme, rows: int | None = None,
                 fisher: OutputFisher | None = None, method: str = "rtn", backend: Backend | None = None) -> float:
    """The output error of `method` (rtn, gptq) at `scheme`: tr(ΔW H ΔWᵀ), each row's error weighted by
    diag F for a tensor whose output is the layer's output (down_proj) given that layer's output
    Fisher F (calibrate/sensitivity.py). Row by row, since rounding errors of different rows are
    uncorrelated: measured on the text reference, the full tr(F ΔW H ΔWᵀ) for down_proj is within
    ~20 % of this (gate/up errors, whose output directions W_down correlates, get the full F in
    `mlp_output_factors`). RTN on `rows` evenly spaced rows scaled to all; GPTQ on all rows. ΔW is on
    the grid the format writes (`backend`: its solvers; GGUF's K-quants fit their scales, which gives
    ~30 % less error at Q2_K/Q3_K than a min/max grid on the text reference)."""
    backend = backend or Backend()
    scheme = fit_group(scheme, w.shape[1])[0]  # the group the format fits to this width (as plan_tensor does)
    idx = _sampled_rows(w.shape[0], rows) if method == "rtn" else None
    ws = w if idx is None else w[idx]
    if method == "rtn":
        dw = backend.rtn_one(scheme, ws).dequantize().float() - ws
    else:
        dw = backend.gptq(scheme, ws[None], h[None])[0][0].dequantize().float() - ws
    per_row = ((dw @ h) * dw).sum(-1)
    if fisher is not None:
        diag = fisher.diagonal
        per_row = per_row * (diag if idx is None else diag[idx])
    return float(per_row.sum()) * (w.shape[0] / ws.shape[0])


SURROGATE_SAMPLES = 256  # Gaussian inputs with the calibrated covariance, for the MLP output factor


def mlp_output_factors(w: dict[str, torch.Tensor], h: torch.Tensor, schemes: list[QuantScheme],
                       samples: int = SURROGATE_SAMPLES, fisher: OutputFisher | None = None,
                       mean: torch.Tensor | None = None) -> dict[str, list[float]]:
    """How much of a gate/up error reaches the MLP's output, per width: mean ‖Δy‖² / mean ‖ΔW x‖²
    for y = W_down (silu(W_gate x) * (W_up x)) (every family quantkit knows uses this SwiGLU), with
    x ~ N(μ, H - μμᵀ) (H: the calibrated mean xxᵀ of the MLP input, μ its mean input; μ = 0 for a
    calibration made before quantkit recorded it) and W_gate or W_up rounded to the width. The mean
    matters: real inputs keep most of a SwiGLU's gate units off, so an error in W_up reaches the
    output through few of them; a zero-mean surrogate with the same second moment switches half of
    them on. Measured on the text reference (most-routed expert of each layer, against its 1300-1400
    real calibration tokens): up_proj's factor from N(0, H) was 1.8-5x the real tokens' one, from
    N(μ, H - μμᵀ) 0.9-1.5x.
    down_proj's error is already in output space (factor 1). Without it the objective would add
    errors measured in the intermediate space (gate/up) to errors in the hidden space (down). With the
    layer's output Fisher F, ‖Δy‖² is Δyᵀ F Δy, as down_proj's error is weighted."""
    gen = torch.Generator().manual_seed(0)
    d = h.shape[0]
    if mean is None:
        x = torch.randn(samples, d, generator=gen) @ _covariance_root(h).T
    else:
        x = mean + torch.randn(samples, d, generator=gen) @ _covariance_root(h - torch.outer(mean, mean)).T
    g, up, down = w["gate"], w["up"], w["down"]
    y = (F.silu(x @ g.T) * (x @ up.T)) @ down.T
    out: dict[str, list[float]] = {}
    for proj in ("gate", "up"):
        factors = []
        for s in schemes:
            fs = fit_group(s, d)[0]
            wq = quantize_rtn(w[proj], fs.bits, fs.group_size, fs.sym).dequantize()
            gq, uq = (x @ wq.T, x @ up.T) if proj == "gate" else (x @ g.T, x @ wq.T)
            dy = (F.silu(gq) * uq) @ down.T - y
            proxy = float((x @ (wq - w[proj]).T).pow(2).sum())
            err = float(dy.pow(2).sum()) if fisher is None else fisher.quadratic(dy)
            factors.append(err / proxy if proxy > 0 else 1.0)
        out[proj] = factors
    return out


def _gate_square(routing: dict) -> float:
    """Mean squared routing weight of a (token, expert) pair: an expert's output enters the layer's
    output multiplied by its routing weight g, so its squared error by g² (~1/k² for top-k). From the
    calibration's mean top-k weights per rank; 1 when they were not recorded."""
    w = routing.get("mean_topk_weights") or []
    return float(np.mean(np.square(w))) if len(w) else 1.0


def _covariance_root(h: torch.Tensor) -> torch.Tensor:
    """L with L Lᵀ = H + δI: Cholesky, damped as GPTQ damps H (1 % of the mean diagonal, more if H is
    too singular for that), since H from few or correlated tokens may not be positive definite."""
    eye = torch.eye(h.shape[0], dtype=torch.float64)
    mean = float(h.diagonal().mean().clamp_min(1e-12))
    for damp in (0.01, 0.1, 1.0):
        root, info = torch.linalg.cholesky_ex(h.double() + damp * mean * eye)
        if int(info) == 0:
            return root.float()
    return (eye * mean ** 0.5).float()


def _fisher_table(store, units: list[Unit], notes: list[str]) -> dict[tuple, OutputFisher] | None:
    """(layer, modality) -> output Fisher for every pair the units need (None: the calibration has
    none; recalibrate to get it). A pair the sensitivity pass saw no tokens of gets an isotropic F
    with the mean trace per dimension of the pairs it saw."""
    fishers = store.fishers()
    if not fishers:
        notes.append("the calibration has no output sensitivity (made before it, or --sensitivity-tokens 0): "
                     "every layer's output error counts alike; recalibrate for a better allocation")
        return None
    table = {(n, m): f for n, per in fishers.items() for m, f in per.items()}
    iso = float(np.mean([f.mean for f in table.values()]))
    d = next(iter(table.values())).vectors.shape[0]
    missing = sorted({(e.role.layer, e.role.modality) for u in units for e in u.entries} - set(table))
    for n, m in missing:
        table[(n, m)] = OutputFisher(torch.zeros(0), torch.zeros(d, 0), iso * d, 0)
    if missing:
        notes.append(f"no sensitivity tokens for {', '.join(f'layer {n} {m}' for n, m in missing)}: "
                     "weighted by the mean sensitivity of the others")
    return table


def measure_errors(ckpt: Checkpoint, adapter: Adapter, store, units: list[Unit], *, rows: int | None,
                   method: str, backend: Backend | None = None, log=lambda m: None) -> list[str]:
    """Fill each unit's rtn_error and error (see the module docstring); returns notes."""
    notes: list[str] = []
    fishers = _fisher_table(store, units, notes)
    by_layer: dict[int, list[tuple[Unit, TensorPlan]]] = defaultdict(list)
    for u in units:
        u.rtn_error = [0.0] * len(u.schemes)
        u.error = [0.0] * len(u.schemes)
        for e in u.entries:
            by_layer[e.role.layer].append((u, e))
    ratios: dict[tuple, list[float]] = {}
    factor_log: dict[str, list[float]] = defaultdict(list)
    for layer in sorted(by_layer):
        calib = store.layer(layer)
        hessians: dict[str, torch.Tensor | None] = {}
        # per token of every modality (F is per token): the objective is then ~2x the mean KL per position
        all_tokens = sum(int(r.get("tokens", 0)) for r in calib.routing.values())

        def hessian(e: TensorPlan) -> torch.Tensor:
            group = adapter.input_group(e.module)
            if group not in hessians:
                hessians[group] = calib.hessian(group)[0]
                if hessians[group] is None:
                    notes.append(f"{e.name}: no calibration tokens; weighted by plain squared error")
                    hessians[group] = torch.eye(e.shape[1])
            return hessians[group]

        def layer_fisher(modality: str) -> OutputFisher | None:
            return fishers[(layer, modality)] if fishers is not None else None

        def fisher_of(e: TensorPlan) -> OutputFisher | None:  # for tensors writing the layer's output
            return layer_fisher(e.role.modality) if e.role.proj == "down" else None

        # one record per tensor: [unit, entry, routed tokens, RTN errors, estimated errors]
        records = []
        per_tensor: dict[tuple, list] = defaultdict(list)  # routed: (modality, input kind) -> records
        for u, e in by_layer[layer]:
            h, w = hessian(e), ckpt.read(e.name).float()
            routing = calib.routing.get(e.role.modality, {})
            counts = routing.get("tokens_per_expert") or []
            tokens = counts[e.role.expert] if e.role.expert is not None and e.role.expert < len(counts) else 0
            per = all_tokens if fishers is not None else int(routing.get("tokens", 0))
            weight = (tokens + 1) / max(per, 1) * _gate_square(routing)
            rec = [u, e, tokens, [weight * tensor_error(w, h, s, rows, fisher_of(e), backend=backend) for s in u.schemes],
                   None]
            records.append(rec)
            per_tensor[(e.role.modality, adapter.input_group(e.module).rsplit(".", 1)[-1])].append(rec)
        for kind, items in per_tensor.items():  # GPTQ / RTN on the most-routed expert of each group
            u, e = max(items, key=lambda r: r[2])[:2]
            ratio = [1.0] * len(u.schemes)
            if method == "gptq":
                w, h = ckpt.read(e.name).float(), hessian(e)
                for i, s in enumerate(u.schemes):
                    r = tensor_error(w, h, s, None, fisher_of(e), backend=backend)
                    ratio[i] = tensor_error(w, h, s, None, fisher_of(e), "gptq", backend) / r if r > 0 else 1.0
                ratios[(layer, *kind)] = ratio
            for rec in items:
                rec[4] = [a * (ratio[i] if i < len(ratio) else 1.0) for i, a in enumerate(rec[3])]
        factors = _layer_mlp_factors(ckpt, records, hessian, layer_fisher, lambda e: calib.mean(adapter.input_group(e.module)))
        for u, e, _, errs, est in records:
            f = factors.get((e.role.kind, e.role.modality, e.role.proj))
            if f is not None:
                factor_log[f"{e.role.kind} {e.role.proj}"].append(f[len(f) // 2])
            elif fishers is not None and fisher_of(e) is None:  # gate/up without the expert's down quantized:
                f = [layer_fisher(e.role.modality).mean] * len(errs)  # the layer's mean sensitivity per dimension
            f = f or [1.0] * len(errs)
            u.rtn_error = [a + b * c for a, b, c in zip(u.rtn_error, errs, f)]
            u.error = [a + b * c for a, b, c in zip(u.error, est, f)]
        log(f"allocate: layer {layer} measured")
    if ratios:
        mean = np.mean([r for r in ratios.values()], axis=0) if len({len(r) for r in ratios.values()}) == 1 else None
        if mean is not None:
            notes.append("GPTQ/RTN error ratio (mean over layers): " + ", ".join(
                f"{scheme_label(s)} {m:.2f}" for s, m in zip(units[0].schemes, mean)))
    if factor_log:
        notes.append(("output-Fisher-weighted share" if fishers is not None else "share") +
                     " of a gate/up error reaching the MLP output (mean, middle width): " + ", ".join(
                         f"{k} {np.mean(v):.3g}" for k, v in sorted(factor_log.items())))
    return notes


def _layer_mlp_factors(ckpt: Checkpoint, records: list, hessian, fisher_of, mean_of) -> dict[tuple, list[float]]:
    """(kind, modality, gate|up) -> output factor per width (`mlp_output_factors`), measured on the
    most-routed expert of each modality in this layer. Experts whose three projections are not all
    quantized keep factor 1."""
    members: dict[tuple, dict[str, list]] = defaultdict(dict)
    for rec in records:
        r = rec[1].role
        if r.proj in ("gate", "up", "down"):
            members[(r.kind, r.modality, r.expert)][r.proj] = rec
    best: dict[tuple, tuple] = {}
    for key, projs in members.items():
        if set(projs) != {"gate", "up", "down"}:
            continue
        tokens = projs["gate"][2]
        if key[:2] not in best or tokens > best[key[:2]][0]:
            best[key[:2]] = (tokens, projs)
    out: dict[tuple, list[float]] = {}
    for (kind, modality), (_, projs) in best.items():
        w = {p: ckpt.read(projs[p][1].name).float() for p in ("gate", "up", "down")}
        gate = projs["gate"][1]
        f = mlp_output_factors(w, hessian(gate), projs["gate"][0].schemes, fisher=fisher_of(modality), mean=mean_of(gate))
        out[(kind, modality, "gate")], out[(kind, modality, "up")] = f["gate"], f["up"]
    return out


# -- the exact knapsack ------------------------------------------------------------------------------------

def knapsack(options: list[list[tuple[int, float]]], capacity: int) -> tuple[list[int], float] | None:
    """Minimise the sum of errors, one option (bytes, error) per unit, with sum of bytes <= capacity.
    Exact: a Pareto frontier of (bytes, error) merged unit by unit (dominated points dropped, points
    that cannot fit the remaining units' smallest bytes dropped), then traced back. None if nothing fits.
    A frontier past MAX_FRONTIER points is only possible with thousands of units (per-expert units of a
    real model); then costs are rounded up to a byte quantum (still within budget) and that is said."""
    tail_min = np.cumsum([min(b for b, _ in o) for o in options][::-1])[::-1].tolist() + [0]
    if tail_min[0] > capacity:
        return None
    fb, fe = np.zeros(1, dtype=np.int64), np.zeros(1)
    parents: list[tuple[np.ndarray, np.ndarray]] = []
    for i, opts in enumerate(options):
        limit = capacity - tail_min[i + 1]
        cb = np.concatenate([fb + b for b, _ in opts])
        ce = np.concatenate([fe + e for _, e in opts])
        co = np.repeat(np.arange(len(opts)), len(fb))
        cp = np.tile(np.arange(len(fb)), len(opts))
        keep = cb <= limit
        cb, ce, co, cp = cb[keep], ce[keep], co[keep], cp[keep]
        order = np.lexsort((ce, cb))
        cb, ce, co, cp = cb[order], ce[order], co[order], cp[order]
        best = np.minimum.accumulate(ce)
        pareto = np.ones(len(ce), dtype=bool)
        pareto[1:] = ce[1:] < best[:-1]  # strictly better than every cheaper point
        fb, fe = cb[pareto], ce[pareto]
        parents.append((co[pareto], cp[pareto]))
        if len(fb) > MAX_FRONTIER:
            raise PlanRefused(f"allocation frontier over {MAX_FRONTIER} points at unit {i}; use fewer units "
                              "(--runtime vllm or llama.cpp)")
    k = int(np.argmin(fe))
    total = float(fe[k])
    choice = [0] * len(options)
    for i in range(len(options) - 1, -1, -1):
        opt, par = parents[i]
        choice[i] = int(opt[k])
        k = int(par[k])
    return choice, total


# -- budgets and the entry point ----------------------------------------------------------------------------

def weight_budget(config: dict, model_dir, *, target_size: str | int | None, vram: str | int | None,
                  context: int) -> tuple[int, dict | None]:
    """Bytes of weights allowed: `target_size`, or `vram` minus the serving estimate's KV cache,
    activations and runtime allowance at `context` (quantkit.serving)."""
    if (target_size is None) == (vram is None):
        raise UsageError("give one of --target-size (weight bytes) or --vram (card memory, with --context)")
    if target_size is not None:
        return parse_size(target_size), None
    if context <= 0:
        raise UsageError(f"--context {context}: must be a positive number of tokens")
    card = parse_size(vram)
    shape = ServingShape.from_config(config, max_image_patches=max_image_patches(model_dir) if model_dir else 0)
    overhead = vram_estimate(0, shape, context)
    return card - overhead["total"], {"vram_bytes": card, "context": context, "shape": shape}


def allocate(ckpt: Checkpoint, adapter: Adapter, base: Profile, store, *, budget: int, runtime: str | None = None,
             rows: int | None = DEFAULT_ROWS, vram: dict | None = None, log=lambda m: None) -> Allocation:
    """The allocation of `base`'s routed experts under `budget` weight bytes (module docstring)."""
    plan = build_plan(ckpt, adapter, base, force=True)
    runtime = check_runtime(plan.format, runtime)
    units = build_units(ckpt, adapter, plan, runtime)
    fixed = plan.predicted_bytes - sum(e.predicted_bytes for u in units for e in u.entries)
    smallest = fixed + sum(min(u.nbytes) for u in units)
    if budget < smallest:
        where = (f"--vram {human_bytes(vram['vram_bytes'])} at context {vram['context']} leaves "
                 f"{human_bytes(max(budget, 0))} for weights" if vram else f"--target-size {human_bytes(budget)}")
        raise PlanRefused(f"{where}: the smallest reachable size is {human_bytes(smallest)} ({smallest} bytes), "
                          f"the narrowest width of every {runtime} unit; give a larger budget")
    method = "gptq" if any(e.scheme.method == "gptq" for u in units for e in u.entries) else "rtn"
    notes = measure_errors(ckpt, adapter, store, units, rows=rows, method=method, backend=plan.format.backend(), log=log)
    choice, _ = knapsack([list(zip(u.nbytes, u.error)) for u in units], budget - fixed)
    alloc = Allocation(runtime, budget, fixed, units, choice, method, rows, notes=notes)
    if vram:
        alloc.vram = vram_estimate(alloc.predicted_bytes, vram["shape"], vram["context"])
    return alloc


def real_model_choices(model: str, vram: str, context: int) -> dict:
    """For a real config (no weights, no calibration): each uniform expert width of the default
    format's shipped profiles, its weight bytes and serving VRAM at `context`, whether it fits the
    card, and the bytes left above the largest fitting one (what the allocator can spend)."""
    from .adapters import adapter_for, real_config
    from .checkpoint import ConfigCheckpoint
    from .format import get_format
    from .profiles import resolve_profile

    config = real_config(model)
    adapter = adapter_for(config)
    ckpt = ConfigCheckpoint(config, f"{model} (config only)", adapter.tensor_shapes())
    from .serving import REAL_MAX_IMAGE_PATCHES
    shape = ServingShape.from_config(config, max_image_patches=REAL_MAX_IMAGE_PATCHES)
    card = parse_size(vram)
    base = resolve_profile(adapter, bits=None, profile=None)
    rows = []
    for s in get_format(base.format).candidate_schemes(QuantScheme(bits=4)):
        plan = build_plan(ckpt, adapter, base.with_overrides(expert_bits=s.bits))
        est = vram_estimate(plan.predicted_bytes, shape, context)
        rows.append({"expert_bits": s.bits, "weights": plan.predicted_bytes, "vram": est["total"],
                     "fits": est["total"] <= card})
    budget = card - vram_estimate(0, shape, context)["total"]
    fitting = [r for r in rows if r["fits"]]
    top = max(fitting, key=lambda r: r["weights"]) if fitting else None
    return {"model": model, "vram": card, "context": context, "weight_budget": budget, "rows": rows,
            "largest_fitting_bits": top and top["expert_bits"],
            "bytes_above_largest_fitting": budget - top["weights"] if top else None}


def main(argv=None) -> None:
    """`python -m quantkit.allocate --real ERNIE-4.5-VL-28B-A3B --vram 24GiB --context 32768`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m quantkit.allocate", description=real_model_choices.__doc__)
    p.add_argument("--real", required=True)
    p.add_argument("--vram", required=True)
    p.add_argument("--context", type=int, default=32768)
    a = p.parse_args(argv)
    r = real_model_choices(a.real, a.vram, a.context)
    print(f"{r['model']} on {human_bytes(r['vram'])} at context {r['context']}: weights may take "
          f"{human_bytes(r['weight_budget'])} ({r['weight_budget']} bytes)")
    for row in r["rows"]:
        print(f"  uniform {row['expert_bits']}-bit experts: weights {human_bytes(row['weights']):>10}  "
              f"VRAM {human_bytes(row['vram']):>10}  {'fits' if row['fits'] else 'does not fit'}")
    if r["largest_fitting_bits"] is not None:
        b = r["bytes_above_largest_fitting"]
        print(f"  above uniform {r['largest_fitting_bits']}-bit, the allocator has {human_bytes(b)} ({b} bytes) to spend")
    else:
        print("  no uniform width fits")


if __name__ == "__main__":
    main()


__all__ = ["Allocation", "RUNTIMES", "Unit", "allocate", "knapsack", "real_model_choices", "tensor_error",
           "weight_budget"]
