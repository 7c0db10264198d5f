"""A wheel carries what the installed tool reads besides code: profiles, the default calibration set
and the trained reference. Built here with the project's own build backend, then imported from the
unpacked wheel only (the checkout is not on the path)."""
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_carries_profiles_calibration_set_and_trained_reference(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next(tmp_path.glob("quantkit-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    images = sorted((REPO / "calibration" / "default" / "images").glob("*.png"))
    assert images and all((site / "quantkit/data/default_calibration/images" / p.name).is_file() for p in images)
    probe = (
        "import json, quantkit\n"
        "from quantkit.calibrate.samples import default_set_dir, load_samples\n"
        "from quantkit.profiles import load_profile\n"
        "from quantkit.reference.trained import TRAINED_DIR\n"
        "d = default_set_dir()\n"
        "print(json.dumps({'pkg': quantkit.__file__, 'set': str(d), 'samples': len(load_samples(d).samples),\n"
        "                  'trained': sorted(p.name for p in TRAINED_DIR.iterdir()),\n"
        "                  'profile': load_profile('ernie45-vl-w4').name}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["pkg"].startswith(str(site)) and got["set"].startswith(str(site))
    expected = sum(1 for line in (REPO / "calibration/default/samples.jsonl").read_text().splitlines() if line.strip())
    assert got["samples"] == expected
    assert {"model.safetensors", "config.json", "tokenizer.model", "processor_config.json"} <= set(got["trained"])
    assert got["profile"] == "ernie45-vl-w4"
