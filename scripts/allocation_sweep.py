#!/usr/bin/env python
"""Allocated variants across budgets, for `make profile`'s tradeoff plot (issue 15): the byte sizes of
uniform 2-, 3- and 4-bit experts (same profile, same options) are planned, then one
`quantkit quantize MODEL --calib DIR --target-size N` runs at the uniform 3-bit size and at each of
`--fractions` of the way from uniform 2-bit to uniform 4-bit (same base profile: `--profile`).
Budgets below the uniform 3-bit size use `--low-profile` as the base when given (with its own group
sizes; `--group-size` applies to `--profile`): the allocator only
chooses the routed experts' widths, so near 2 bits the base's other tensors decide what is left for
them (the VL reference: `ernie45-vl-w2`'s 4-bit attention and asymmetric grid, against `ernie45-vl-w4`'s
8-bit attention, leave the experts 0.14 MB more at 2.45 MB; measured text KL 1.9e-4 against 4.9e-4).

    python scripts/allocation_sweep.py MODEL --calib DIR --out DIR [--profile P | --format F]
                                       [--low-profile P] [--group-size G] [--fractions 0.25,0.75]

Writes OUT/alloc-w3size and OUT/alloc-<percent> (variant directories) and prints the budgets.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> int:
    from quantkit.api import QuantizeOptions, make_plan, quantize
    from quantkit.errors import QuantkitError

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--calib", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--profile")
    p.add_argument("--format")
    p.add_argument("--group-size", type=int)
    p.add_argument("--low-profile", help="base profile for budgets below the uniform 3-bit size")
    p.add_argument("--fractions", default="0.25,0.75")
    a = p.parse_args(argv)
    kw = dict(model=a.model, profile=a.profile, format=a.format, group_size=a.group_size)
    try:
        size = {b: make_plan(QuantizeOptions(out=a.out, bits=b, **kw))[2].predicted_bytes for b in (2, 3, 4)}
        budgets = {"alloc-w3size": size[3]}
        for f in (float(x) for x in a.fractions.split(",")):
            budget = int(size[2] + f * (size[4] - size[2]))
            if budget not in budgets.values():  # 0.5 is usually the uniform 3-bit size itself
                budgets[f"alloc-{round(100 * f)}"] = budget
        for name, budget in budgets.items():
            # the low profile with its own group sizes (--group-size is for --profile)
            base = dict(kw, profile=a.low_profile, group_size=None) if a.low_profile and budget < size[3] else kw
            print(f"quantkit quantize {a.model} --profile {base['profile']} --calib {a.calib} --target-size {budget} "
                  f"-> {a.out / name} (uniform 2/3/4-bit: {size[2]}/{size[3]}/{size[4]} bytes)", flush=True)
            quantize(QuantizeOptions(out=a.out / name, calib=a.calib, target_size=budget, overwrite=True, **base))
    except QuantkitError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
