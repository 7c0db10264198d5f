"""scripts/allocation_sweep.py (the allocated series of `make profile`): budgets between uniform 2- and
4-bit experts, each written at or under its budget; below the uniform 3-bit size the base profile is
`--low-profile` (with its own group sizes), above it `--profile`."""
import json
import runpy
import sys
from pathlib import Path

from quantkit.api import CalibrateOptions, calibrate
from quantkit.format import get_format

SWEEP = Path(__file__).resolve().parents[1] / "scripts" / "allocation_sweep.py"


def test_sweep_uses_the_low_profile_below_the_3bit_size(tiny_vl, tmp_path, monkeypatch, capsys):
    calib, _ = calibrate(CalibrateOptions(model=str(tiny_vl), out=tmp_path / "calib", sensitivity_tokens=512))
    out = tmp_path / "sweep"
    monkeypatch.setattr(sys, "argv", ["allocation_sweep.py", str(tiny_vl), "--calib", str(calib), "--out", str(out),
                                      "--profile", "ernie45-vl-w4", "--low-profile", "ernie45-vl-w2"])
    try:
        runpy.run_path(str(SWEEP), run_name="__main__")
    except SystemExit as e:
        assert e.code == 0
    printed = capsys.readouterr().out
    budgets = {line.split(" -> ")[1].split()[0].rsplit("/", 1)[-1]: int(line.split("--target-size ")[1].split()[0])
               for line in printed.splitlines() if " -> " in line}
    assert set(budgets) == {"alloc-w3size", "alloc-25", "alloc-75"}
    for name, budget in budgets.items():
        manifest = json.loads((out / name / "quantkit.json").read_text())
        base = "ernie45-vl-w2" if budget < budgets["alloc-w3size"] else "ernie45-vl-w4"
        assert manifest["profile"]["name"] == f"{base}-alloc", (name, manifest["profile"]["name"])
        assert get_format("gptq").file_bytes(out / name)["tensor_bytes"] <= budget
