"""The calibration directory: one calibration serves many variants (8/4/2 bit, GPTQ settings).

    CALIB_DIR/calibration.json        source id, revision and fingerprint, sample-set hash and stats,
                                      mode, coverage report, per-layer groups / token counts / routing
    CALIB_DIR/layer_NNN.safetensors   running sums XᵀX (fp32), one per distinct input group, and
                                      the running sums of X (`sum:` + key; absent in older ones)
    CALIB_DIR/sensitivity.safetensors top eigenpairs of each MoE layer's output Fisher per modality
                                      (calibrate/sensitivity.py; absent with --sensitivity-tokens 0)

A calibration made for one checkpoint is refused for another (fingerprint over config and tensor
shapes), so a variant can never be solved with another model's statistics.
"""
from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..checkpoint import Checkpoint
from ..errors import CalibrationError
from .runner import LayerCalibration
from .sensitivity import OutputFisher, load_fishers

META = "calibration.json"
FORMAT_VERSION = 1


def model_fingerprint(ckpt: Checkpoint) -> str:
    """What the statistics depend on: the config and every tensor's name, dtype and shape."""
    h = hashlib.sha256(json.dumps({k: v for k, v in ckpt.config.items() if k != "quantization_config"},
                                  sort_keys=True).encode())
    for info in ckpt.infos():
        h.update(f"{info.name}:{info.dtype}:{info.shape}\n".encode())
    return h.hexdigest()


SUM_PREFIX = "sum:"  # tensor names of the running sums of X in a layer file


def layer_file(n: int) -> str:
    return f"layer_{n:03d}.safetensors"


def save_layer(directory: Path, calib: LayerCalibration) -> dict:
    """Write one layer's matrices; return its JSON record."""
    tensors = {k: v.contiguous() for k, v in calib.hessians.items()}
    tensors.update({SUM_PREFIX + k: v.contiguous() for k, v in calib.sums.items()})
    save_file(tensors, str(directory / layer_file(calib.layer)))
    return {"file": layer_file(calib.layer), "tokens": calib.tokens, "groups": calib.groups,
            "sources": calib.sources, "routing": calib.routing}


def coverage_report(layers: dict[int, dict], min_tokens: int) -> dict:
    """Tokens per expert per layer and modality: min / median / max, experts under the threshold,
    and how each expert got its statistics."""
    report = {}
    for n, rec in sorted(layers.items()):
        for modality, r in rec["routing"].items():
            counts = r.get("tokens_per_expert") or []
            if not counts:
                continue
            under = [k for k, c in enumerate(counts) if c < min_tokens]
            report[f"{n}.{modality}"] = {
                "layer": n, "modality": modality, "modality_tokens": r.get("tokens", 0),
                "experts": len(counts), "min": min(counts), "median": statistics.median(counts), "max": max(counts),
                "zero": [k for k, c in enumerate(counts) if c == 0], "under_threshold": under,
                "router_entropy": r.get("router_entropy"),
            }
    return report


def format_coverage(report: dict, min_tokens: int, mode: str) -> list[str]:
    lines = [f"expert coverage (routed tokens per expert; threshold {min_tokens}, mode {mode}):",
             f"  {'layer':>5} {'modality':<8} {'tokens':>7} {'min':>5} {'median':>7} {'max':>6}  under threshold"]
    for r in report.values():
        under = r["under_threshold"]
        note = "none" if not under else f"{len(under)}: {under[:8]}{' ...' if len(under) > 8 else ''}"
        if under and mode == "auto" and r["modality_tokens"]:
            note += " (calibrated on all tokens of the modality)"
        if not r["modality_tokens"]:
            note = "ALL: no tokens of this modality in the samples (RTN fallback at quantize time)"
        lines.append(f"  {r['layer']:>5} {r['modality']:<8} {r['modality_tokens']:>7} {r['min']:>5} "
                     f"{r['median']:>7g} {r['max']:>6}  {note}")
    return lines


class CalibrationDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        meta = self.path / META
        if not meta.is_file():
            raise CalibrationError(f"--calib {path}: no {META}; run `quantkit calibrate` first")
        try:
            self.meta = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise CalibrationError(f"{meta}: invalid JSON ({e})")
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise CalibrationError(f"{meta}: calibration format {self.meta.get('format_version')} is not "
                                f"{FORMAT_VERSION}; recalibrate with this quantkit")

    def check_matches(self, ckpt: Checkpoint) -> None:
        if self.meta["source"]["fingerprint"] != model_fingerprint(ckpt):
            raise CalibrationError(f"--calib {self.path}: made for {self.meta['source']['id']} "
                                f"(revision {self.meta['source'].get('revision')}), which differs from "
                                f"{ckpt.source}; recalibrate for this model")

    def layer(self, n: int) -> LayerCalibration:
        rec = self.meta["layers"].get(str(n))
        if rec is None:
            raise CalibrationError(f"--calib {self.path}: no statistics for layer {n}")
        path = self.path / rec["file"]
        try:
            hessians = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise CalibrationError(f"{path}: unreadable ({e.__class__.__name__}); recalibrate")
        sums = {k[len(SUM_PREFIX):]: hessians.pop(k) for k in [k for k in hessians if k.startswith(SUM_PREFIX)]}
        return LayerCalibration(n, hessians, {k: int(v) for k, v in rec["tokens"].items()}, rec["groups"],
                                rec["sources"], rec["routing"], sums)

    def fishers(self) -> dict[int, dict[str, OutputFisher]]:
        """Each MoE layer's output Fisher per modality ({} when the calibration has none)."""
        rec = self.meta.get("sensitivity")
        if not rec:
            return {}
        try:
            return load_fishers(self.path, rec["layers"])
        except Exception as e:  # a missing or damaged file, or a record that does not match it
            raise CalibrationError(f"{self.path / rec.get('file', 'sensitivity.safetensors')}: unreadable "
                                   f"({e.__class__.__name__}); recalibrate")
