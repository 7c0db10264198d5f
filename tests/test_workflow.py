"""The publishing workflow, `make publish` and publish/variants.yaml call things that exist.

The workflow is parsed and checked for its shape, its secrets, and that every `make` target and
`quantkit` / `python -m quantkit.publish.plan` command it runs exists and parses with the real Click
definitions. actionlint runs too where it is installed (skipped otherwise).
"""
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from quantkit.cli import main
from quantkit.publish.plan import load_publish_config, publish_commands, publish_matrix
from quantkit.publish.plan import main as plan_main
from quantkit.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "publish.yml"
CONFIG = ROOT / "publish" / "variants.yaml"
_EXPR = re.compile(r"\$\{\{.*?\}\}")


def _workflow() -> tuple[dict, dict]:
    data = yaml.safe_load(WORKFLOW.read_text())
    return data, data.get("on", data.get(True))  # YAML 1.1 reads the key `on` as True


def _run_lines():
    data, _ = _workflow()
    for job_id, job in data["jobs"].items():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                if line.strip():
                    yield job_id, step, line.strip()


def _make_targets() -> set[str]:
    return {m.group(1) for line in (ROOT / "Makefile").read_text().splitlines()
            if (m := re.match(r"^([A-Za-z][\w.-]*)\s*:(?![=])", line))}


def _publish_recipe() -> str:
    text = (ROOT / "Makefile").read_text()
    return text[text.index("\npublish:"):]


def test_workflow_shape():
    data, on = _workflow()
    assert on["push"]["tags"] and "workflow_dispatch" in on
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["push"]["type"] == "boolean" and inputs["push"]["default"] is False
    assert data["permissions"] == {"contents": "read"}
    jobs = data["jobs"]
    assert set(jobs) == {"plan", "calibrate", "variant"}
    for job_id, job in jobs.items():
        assert job["runs-on"] and job["steps"], job_id
        needs = job.get("needs", [])
        for need in [needs] if isinstance(needs, str) else needs:
            assert need in jobs, (job_id, need)
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"actions/(checkout|setup-python)@v\d+", step["uses"]), step["uses"]
    # the matrix comes from the plan job's output, which a step with that id writes
    assert jobs["variant"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    assert any(s.get("id") == "matrix" and "GITHUB_OUTPUT" in s["run"] for s in jobs["plan"]["steps"])
    assert jobs["variant"]["strategy"]["max-parallel"] == 1  # pushes to one repo's main card serialize


def test_hf_token_secret_only_reaches_the_push_step():
    text = WORKFLOW.read_text()
    assert set(re.findall(r"secrets\.(\w+)", text)) == {"HF_TOKEN"}
    data, _ = _workflow()
    holders = [(j, s.get("name")) for j, job in data["jobs"].items() for s in job["steps"]
               if "secrets." in json.dumps(s)]
    assert holders == [("variant", "Quantize, profile, package and push ${{ matrix.variant }}")]
    step = data["jobs"]["variant"]["steps"][-1]
    assert step["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}" and "make publish" in step["run"]
    assert "github.event_name == 'push' || inputs.push" in step["env"]["PUSH"]  # dry run unless tag or ticked


def test_run_steps_call_real_make_targets_and_commands(capsys):
    targets, recipe = _make_targets(), _publish_recipe()
    seen = set()
    for job_id, step, line in _run_lines():
        words = shlex.split(_EXPR.sub("X", line))
        if words[0] == "make":
            for w in words[1:]:
                if "=" in w:
                    var = w.split("=", 1)[0]
                    assert f"$({var})" in recipe, f"{job_id}: make variable {var} is not read by `publish`"
                else:
                    assert w in targets, f"{job_id}: make target {w} does not exist"
                    seen.add(w)
            step_arg = [w.split("=", 1)[1] for w in words if w.startswith("STEP=")]
            if step_arg:
                publish_commands(load_publish_config(CONFIG), "out", step=step_arg[0])  # a step it knows
        elif "quantkit.publish.plan" in line:
            sub = re.search(r"python -m quantkit\.publish\.plan (\w+) \"\$PUBLISH_CONFIG\"", line).group(1)
            assert sub == "matrix", line
            assert step["env"]["ONLY"] == "${{ inputs.only }}"  # inputs reach the script through env only
            seen.add("quantkit.publish.plan " + sub)
    assert seen == {"install", "publish", "quantkit.publish.plan matrix"}
    # what the plan job prints is a valid matrix of the config's variant ids
    assert plan_main(["matrix", str(CONFIG), "--only", ""]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"variant": [v["id"] for v in load_publish_config(CONFIG)["variants"]]}


def test_config_names_shipped_profiles():
    cfg = load_publish_config(CONFIG)
    assert cfg["branch"] == "auto" or "{name}" in cfg["repo"]
    for v in cfg["variants"]:
        assert load_profile(v["profile"]).family == "ernie45_vl"
    assert publish_matrix(cfg, "w4") == {"variant": ["w4"]}


@pytest.mark.parametrize("step,push", [("all", False), ("all", True), ("calibrate", False), ("variant", True)])
@pytest.mark.parametrize("with_profile", [False, True])
def test_publish_commands_parse_with_the_real_cli(step, push, with_profile):
    cfg = load_publish_config(CONFIG)
    lines = publish_commands(cfg, "build/publish", step=step, push=push,
                             has_command=lambda name: with_profile and name in main.commands)
    calls = []
    for line in lines:
        for part in line.split("||"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["quantkit"]:
                calls.append(words[1:])
    assert calls, lines
    for args in calls:
        assert args[0] in main.commands, f"quantkit {args[0]} does not exist"
        cmd = main.commands[args[0]]
        cmd.make_context(args[0], list(args[1:]))  # raises on an unknown option or a bad value
    names = [a[0] for a in calls]
    if step == "calibrate":
        assert names == ["calibrate"]
    else:
        assert names.count("quantize") == names.count("package") == names.count("push") == len(cfg["variants"])
        pushes = [a for a in calls if a[0] == "push"]
        assert all(("--dry-run" in a) != push for a in pushes)
    assert ("export HF_HUB_OFFLINE=0  # the base model is read from the Hub, or the push needs it" in lines)


def test_make_publish_runs_the_plan():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "publish", "PUSH=1", "ONLY=w4", "STEP=variant"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "-m quantkit.publish.plan commands publish/variants.yaml" in out.stdout
    assert "--step variant" in out.stdout and "--only w4" in out.stdout and "--push" in out.stdout
    dry = subprocess.run(["make", "-n", "publish"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "--push" not in dry.stdout  # dry run by default


def test_rehearsal_of_the_variant_step_runs(tiny_vl, tmp_path, monkeypatch):
    """The generated variant step, run through the CLI on the tiny model with RTN: quantize, package,
    verify-files and a dry-run push."""
    import quantkit.publish.packaging as pkg

    monkeypatch.setattr(pkg, "collect_verdicts", lambda variant: None)  # keep it fast
    cfg_path = tmp_path / "variants.yaml"
    cfg_path.write_text(yaml.safe_dump({"model": str(tiny_vl), "repo": "test-org/tiny-GPTQ", "branch": "auto",
                                        "license": "apache-2.0", "base_model": "test-org/tiny",
                                        "variants": [{"id": "w4", "profile": "ernie45-vl-w4", "method": "rtn"}]}))
    lines = publish_commands(load_publish_config(cfg_path), tmp_path / "out", step="variant",
                             has_command=lambda name: False)
    runner = CliRunner()
    outputs = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words[:1] == ["quantkit"]:
            res = runner.invoke(main, words[1:])
            assert res.exit_code == 0, (line, res.output, res.stderr)
            outputs.append(res.output)
    assert "calibrate" not in " ".join(lines)  # RTN needs no calibration
    assert outputs[-1].startswith("dry run: nothing is sent to")
    assert "branch:  GPTQ-Int4-g128-rtn" in outputs[-1]
    card = (tmp_path / "out" / "tiny-vl" / "variants" / "w4" / "README.md").read_text()
    assert "base_model: test-org/tiny" in card and "vllm serve test-org/tiny-GPTQ" not in card  # native flavour


def test_actionlint():
    exe = shutil.which("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (the structural checks above still ran)")
    out = subprocess.run([exe, str(WORKFLOW)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
