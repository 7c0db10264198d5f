"""sha256 of every file each variant under a directory records in its quantkit.json (the packaging
card excluded: it embeds dates), as JSON: how issue 13 showed that the restructured code writes the
same variants as the old one (run `make demo` and `make profile`'s quantize commands with each code
base into two build directories, then diff the two outputs).

    python scripts/variant_shas.py BUILD_DIR > shas.json
"""
import json
import sys
from pathlib import Path


def main(root: str) -> dict:
    out = {}
    for m in sorted(Path(root).rglob("quantkit.json")):
        files = json.loads(m.read_text()).get("files", {})
        out[str(m.parent.relative_to(root))] = {k: v["sha256"] for k, v in files.items() if k != "README.md"}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), indent=1))
