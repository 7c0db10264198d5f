#!/usr/bin/env python
"""Train the text reference model (quantkit/reference/trained_text.py) and save it.

    python scripts/train_text_reference.py                   # rebuild quantkit/reference/trained_text/ in place
    python scripts/train_text_reference.py --out build/tref  # somewhere else (e.g. to compare checksums)
    python scripts/train_text_reference.py --check           # fail unless the result matches TRAINED_TEXT_SHA256

One thread, fp32, fixed seeds: on the same CPU kind and library versions the result is byte-identical
(see quantkit/reference/trained_text/README.md for the record of the shipped build).
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

    from quantkit.manifest import sha256_file
    from quantkit.reference.trained_text import (TRAINED_TEXT_DIR, TRAINED_TEXT_SHA256, WEIGHTS,
                                                 build_trained_text_reference)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TRAINED_TEXT_DIR, help=f"output directory (default {TRAINED_TEXT_DIR})")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the weights' sha256 is TRAINED_TEXT_SHA256")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build_trained_text_reference(tmp)
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
    print(f"text reference model written: {out}\nsha256({WEIGHTS}) = {digest}")
    if digest != TRAINED_TEXT_SHA256:
        print(f"note: differs from TRAINED_TEXT_SHA256 = {TRAINED_TEXT_SHA256 or '(unset)'}", file=sys.stderr)
        return 1 if args.check else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
