"""What `quantkit verify` found: one `Check` per rule, grouped into integrity and per-runtime verdicts.

A check is `pass`, `fail` or `skip` (could not be run: the reason says why; a skip is never a pass).
A runtime is servable only when the integrity checks and every one of its own checks pass; a skipped
check makes the verdict "not proven" (servable False) unless the check is marked `optional`.

File form (`to_json()`, printed by `quantkit verify --json`, read by CI):

    {"variant": PATH, "integrity": {"ok": bool, "checks": [CHECK, ...]},
     "runtimes": {"vllm": {"servable": bool, "failed": [LINE, ...], "checks": [CHECK, ...],
                           "serve": "vLLM >= 0.34 (...): vllm serve DIR ..."}, ...},
     "onnx": {...numbers of the onnxruntime cross-check...}}
    CHECK = {"id": "vllm.moe_bits", "status": "pass|fail|skip", "summary": LINE, "details": [...],
             "source": "where the rule comes from"}
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

PASS, FAIL, SKIP = "pass", "fail", "skip"
# Details kept per check in the JSON form (the one-line summary always counts them all).
_MAX_DETAILS = 200


@dataclass
class Check:
    id: str
    status: str
    summary: str = ""  # one line: what failed (or why it was skipped); empty for a pass
    details: list[str] = field(default_factory=list)  # every offender, one per line
    source: str = ""  # runtime + version + file the rule comes from
    optional: bool = False  # a skip does not block the verdict (e.g. the source is not at hand)

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def line(self) -> str:
        tag = "" if self.status == FAIL else f"{self.status}: "
        return f"{self.id}: {tag}{self.summary}" if self.summary else f"{self.id}: {self.status}"

    def to_json(self) -> dict:
        out = {"id": self.id, "status": self.status, "summary": self.summary, "source": self.source}
        if self.details:
            out["details"] = self.details[:_MAX_DETAILS]
            if len(self.details) > _MAX_DETAILS:
                out["details_left_off"] = len(self.details) - _MAX_DETAILS
        return out


def passed(check_id: str, source: str = "", note: str = "") -> Check:
    return Check(check_id, PASS, note, source=source)


def failed(check_id: str, details: list[str], summary: str, source: str = "") -> Check:
    return Check(check_id, FAIL, summary, list(details), source)


def skipped(check_id: str, reason: str, source: str = "", optional: bool = False) -> Check:
    return Check(check_id, SKIP, reason, source=source, optional=optional)


def from_offenders(check_id: str, offenders: list[str], what: str, source: str = "") -> Check:
    """Pass when `offenders` is empty, else fail with one summary line: the count, the first
    offender and `what` (the rule in words)."""
    if not offenders:
        return passed(check_id, source)
    more = f" (+{len(offenders) - 1} more)" if len(offenders) > 1 else ""
    return failed(check_id, offenders, f"{offenders[0]}{more}; {what}", source)


@dataclass
class RuntimeVerdict:
    runtime: str
    checks: list[Check] = field(default_factory=list)
    integrity_ok: bool = True
    serve: str = ""  # how the runtime serves it when servable: minimum version and exact command ("" if none)

    @property
    def servable(self) -> bool:
        return self.integrity_ok and all(c.passed or (c.status == SKIP and c.optional) for c in self.checks)

    def failed_lines(self) -> list[str]:
        lines = [] if self.integrity_ok else ["integrity: the variant's files failed verification (see integrity)"]
        return lines + [c.line() for c in self.checks if not (c.passed or (c.status == SKIP and c.optional))]

    def to_json(self) -> dict:
        out = {"servable": self.servable, "failed": self.failed_lines(), "checks": [c.to_json() for c in self.checks]}
        if self.serve:
            out["serve"] = self.serve if self.servable else f"(if the failed rules were fixed) {self.serve}"
        return out


@dataclass
class VerifyReport:
    variant: str
    integrity: list[Check] = field(default_factory=list)
    runtimes: dict[str, RuntimeVerdict] = field(default_factory=dict)
    onnx: dict = field(default_factory=dict)  # cross-check numbers (tensors, errors, bound)

    @property
    def integrity_ok(self) -> bool:
        return all(c.passed or (c.status == SKIP and c.optional) for c in self.integrity)

    @property
    def servable(self) -> bool:
        """Every requested runtime servable."""
        return bool(self.runtimes) and all(v.servable for v in self.runtimes.values())

    def check(self, check_id: str) -> Check | None:
        for c in self.integrity + [c for v in self.runtimes.values() for c in v.checks]:
            if c.id == check_id:
                return c
        return None

    def failed_ids(self) -> set[str]:
        return {c.id for c in self.integrity + [c for v in self.runtimes.values() for c in v.checks]
                if c.status == FAIL}

    def lines(self) -> list[str]:
        """The human form: integrity, then one verdict line per runtime and one line per failed rule."""
        n_skip = sum(c.status == SKIP for c in self.integrity)
        state = "FAILED" if not self.integrity_ok else "ok" + (f" ({n_skip} check skipped)" if n_skip else "")
        out = [f"integrity: {state}"]
        out += [f"  {c.line()}" for c in self.integrity if not c.passed]
        for name, v in self.runtimes.items():
            out.append(f"{name}: {'servable' if v.servable else 'NOT servable'}")
            out += [f"  {line}" for line in v.failed_lines()]
            if v.servable and v.serve:
                out.append(f"  serve: {v.serve}")
        return out

    def to_json(self) -> dict:
        return {"variant": self.variant,
                "integrity": {"ok": self.integrity_ok, "checks": [c.to_json() for c in self.integrity]},
                "runtimes": {name: v.to_json() for name, v in self.runtimes.items()},
                "servable": self.servable, "onnx": self.onnx}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    def to_markdown(self) -> str:
        """The section `package` puts into the model card: one row per runtime, then failed rules."""
        rows = ["| runtime | servable | failed rules |", "|---|---|---|"]
        for name, v in self.runtimes.items():
            failed = "; ".join(line.split(":", 1)[0] for line in v.failed_lines()) or "-"
            rows.append(f"| {name} | {'yes' if v.servable else 'no'} | {failed} |")
        text = ["## Verification (`quantkit verify`)", "",
                f"File integrity: {'ok' if self.integrity_ok else 'FAILED'}.", ""] + rows
        if self.onnx.get("tensors_checked"):
            text += ["", f"onnxruntime `MatMulNBits` cross-check: {self.onnx['tensors_checked']} quantized tensors, "
                         f"max abs error {self.onnx['max_abs_err']:.3g} "
                         f"(bound ratio {self.onnx['max_err_over_bound']:.3g})."]
        serve = [f"- {name}: {v.serve}" for name, v in self.runtimes.items() if v.servable and v.serve]
        if serve:
            text += ["", "How to serve:", ""] + serve
        details = [f"- {name}: {line}" for name, v in self.runtimes.items() for line in v.failed_lines()]
        if details:
            text += ["", "Failed rules:", ""] + details
        return "\n".join(text) + "\n"
