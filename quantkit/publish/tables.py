"""The tables a model card embeds from elsewhere: the size/quality tradeoff of a `quantkit profile`
report, and the runtime verdicts of `quantkit verify`, as markdown."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import UsageError
from ..manifest import sha256_file


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


# -- the tradeoff table of a `quantkit profile` report ---------------------------------------------

def read_report(report_dir: str | os.PathLike) -> dict:
    """The tradeoff table of a `quantkit profile` report directory: report.md's first table, else
    a table built from report.json's rows. Returns {"table": markdown, "source": file, "sha256": ...}."""
    d = Path(report_dir)
    if not d.is_dir():
        raise UsageError(f"--report {d}: not a directory")
    md, js = d / "report.md", d / "report.json"
    if md.is_file():
        table = _first_md_table(md.read_text(encoding="utf-8"))
        if table:
            return {"table": table, "source": "report.md", "sha256": sha256_file(md)}
    if js.is_file():
        try:
            data = json.loads(js.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{js}: invalid JSON ({e})")
        table = _json_table(data)
        if table:
            return {"table": table, "source": "report.json", "sha256": sha256_file(js)}
    raise UsageError(f"--report {d}: no table in report.md and no rows in report.json "
                     "(expected the output directory of `quantkit profile`)")


def _first_md_table(text: str) -> str | None:
    """The first markdown table of `text`, with the paragraph right after it (its legend), if any."""
    lines = text.splitlines() + [""]
    block: list[str] = []
    for i, line in enumerate(lines):
        if line.strip().startswith("|"):
            block.append(line.rstrip())
            continue
        if len(block) >= 2 and re.match(r"^\s*\|?\s*:?-{3,}", block[1]):
            legend: list[str] = []
            for nxt in lines[i:]:
                if not nxt.strip():
                    if legend:
                        break
                    continue
                if nxt.lstrip().startswith(("#", "|", "```")):
                    break
                legend.append(nxt.rstrip())
            note = " ".join(legend)
            return "\n".join(block) + (f"\n\n{clip(note, 1500)}" if note else "")
        block = []
    return None


def _json_table(data) -> str | None:
    rows = data if isinstance(data, list) else None
    if isinstance(data, dict):
        for key in ("variants", "rows", "table", "results", "tradeoff"):
            if isinstance(data.get(key), list):
                rows = data[key]
                break
        else:
            lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
            rows = lists[0] if lists else None
    rows = [r for r in (rows or []) if isinstance(r, dict)]
    if not rows:
        return None
    cols: list[str] = []
    for r in rows:
        cols += [k for k, v in r.items() if k not in cols and (v is None or isinstance(v, (str, int, float, bool)))]
    if not cols:
        return None
    return md_table(cols, [[cell(r.get(c)) for c in cols] for r in rows])


# -- runtime verdicts ------------------------------------------------------------------------------

def verdict_rows(verdicts) -> list[tuple[str, str, str]]:
    """(check, verdict, detail) rows. Reads the `quantkit verify --json` form
    ({"integrity": {"ok", "checks"}, "runtimes": {name: {"servable", "failed", "checks"}}}), and
    falls back to a flat {name: verdict} mapping or a list of {name, verdict, reason} dicts."""
    if isinstance(verdicts, dict) and isinstance(verdicts.get("runtimes"), dict):
        rows = []
        integ = verdicts.get("integrity") or {}
        if "ok" in integ:
            bad = [c.get("id", "?") for c in integ.get("checks", []) if c.get("status") == "fail"]
            rows.append(("file integrity", "ok" if integ["ok"] else "FAILED", ", ".join(bad)))
        for name, v in verdicts["runtimes"].items():
            v = v if isinstance(v, dict) else {"servable": v}
            failed = [str(x).splitlines()[0] for x in v.get("failed", [])]
            ok = "every check passed" + (f"; {v['serve']}" if v.get("serve") and v.get("servable") else "")
            rows.append((str(name), "servable" if v.get("servable") else "not servable",
                         clip("; ".join(failed)) if failed else clip(ok)))
        return [tuple(cell(x) for x in r) for r in rows]
    items = verdicts
    if isinstance(items, dict):
        items = [{"name": k, **(v if isinstance(v, dict) else {"verdict": v})} for k, v in items.items()
                 if k not in ("variant", "quantkit_version", "created")]
    rows = []
    for it in items or []:
        if not isinstance(it, dict):
            continue
        name = it.get("runtime") or it.get("name") or it.get("id") or "?"
        verdict = it.get("verdict", it.get("status", it.get("servable", it.get("ok", "?"))))
        if isinstance(verdict, bool):
            verdict = "pass" if verdict else "fail"
        detail = it.get("reason") or it.get("summary") or it.get("detail") or it.get("message") or ""
        rows.append((str(name), str(verdict), clip(str(detail).splitlines()[0]) if detail else ""))
    return [tuple(cell(x) for x in r) for r in rows]


def verdicts_section(verdicts, unverified_note: str = "") -> list[str]:
    """The lines after a card's runtime statements: the verdicts table, or that none was recorded."""
    rows = verdict_rows(verdicts) if verdicts is not None else []
    if rows:
        return ["Checked by `quantkit verify` on this variant:", "",
                md_table(["Check", "Verdict", "Detail"], [list(r) for r in rows]), ""]
    return [f"No runtime check is recorded for this card (`quantkit verify` was not run){unverified_note}.", ""]


__all__ = ["cell", "clip", "md_table", "read_report", "verdict_rows", "verdicts_section"]
