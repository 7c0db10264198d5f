#!/usr/bin/env python
"""Train the quantkit reference model (quantkit/reference/trained.py) and save it.

    python scripts/train_reference.py                      # rebuild quantkit/reference/trained/ in place
    python scripts/train_reference.py --out build/ref      # somewhere else (e.g. to compare checksums)
    python scripts/train_reference.py --check              # fail unless the result matches TRAINED_SHA256

One thread, fp32, fixed seeds: on the same CPU kind and library versions the result is byte-identical
(see quantkit/reference/trained/README.md for the record of the shipped build).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    import torch

    from quantkit.reference.trained import TRAINED_DIR, TRAINED_SHA256, WEIGHTS, build_trained_reference
    from quantkit.manifest import sha256_file

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TRAINED_DIR, help=f"output directory (default {TRAINED_DIR})")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the weights' sha256 is TRAINED_SHA256")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out.resolve()
    # Build beside the destination, then swap it in: an interrupted run leaves the old build intact.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build_trained_reference(tmp)
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    digest = sha256_file(out / WEIGHTS)
    print(f"reference model written: {out}\nsha256({WEIGHTS}) = {digest}")
    if digest != TRAINED_SHA256:
        print(f"note: differs from TRAINED_SHA256 = {TRAINED_SHA256 or '(unset)'} (another CPU kind or library "
              "version, or a changed recipe); update quantkit/reference/trained.py if this build is to ship",
              file=sys.stderr)
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
