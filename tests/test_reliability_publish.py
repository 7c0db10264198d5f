"""Issue 17, publishing: a killed `package` is repaired by the next one (item 10); a push to a Hub that
never answers, answers 5xx, or loses an answer ends in seconds with one line naming the repo, and
reads are retried (item 12). The CLI turns each failure into one line on stderr and exit 2."""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import quantkit
from hub_server import HubServer, SilentServer
from quantkit.cli import main
from quantkit.errors import HubError, VariantCorrupt
from quantkit.manifest import MANIFEST, read_manifest, verify_files
from quantkit.publish import CARD, PackageOptions, PushOptions, package, push

BASE = "test-org/tiny-ernie45-vl"
TOKEN = "hf_test_write_token"
REPO_ROOT = Path(quantkit.__file__).resolve().parents[1]


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_DISABLE_XET": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("QUANTKIT_DEBUG", None)
    return {**env, **extra}


def _one_error_line(stderr: str) -> str:
    """The CLI's answer to a failure: exactly one line on stderr, no traceback, no internal error."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _ends_in_one_error_line(stderr: str) -> str:
    """After huggingface_hub's upload progress bars: one `error:` line, the last thing on stderr."""
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    parts = [p.strip() for p in re.split(r"[\r\n]+", stderr) if p.strip()]
    errors = [p for p in parts if p.startswith("error: ")]
    assert len(errors) == 1 and parts[-1] == errors[0], stderr
    return errors[0]


# -- item 10: package is atomic, and a re-run repairs a half-packaged variant --------------------

# Run `package` in a child process that SIGKILLs itself at the rename of `quantkit.json` (or of the
# card): the state a kill between the two writes leaves, with no exception handler running.
_KILLED_PACKAGE = r"""
import os, signal, sys
from pathlib import Path
real_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if Path(dst).name == sys.argv[4]:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)

os.replace = replace
from quantkit.publish import PackageOptions, package
package(PackageOptions(variant=Path(sys.argv[1]), base_model=sys.argv[2], license=sys.argv[3], run_verify=False))
raise SystemExit("package finished: the kill never came")
"""


def _killed_package(variant: Path, license: str, at: str = MANIFEST) -> None:
    r = subprocess.run([sys.executable, "-c", _KILLED_PACKAGE, str(variant), BASE, license, at], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr


def _package(variant, license="apache-2.0", **kw):
    return package(PackageOptions(variant=variant, base_model=BASE, license=license, run_verify=False, **kw))


def _leftovers(variant: Path) -> list[str]:
    return sorted(p.name for p in variant.iterdir() if p.name.endswith(".partial") or p.name.startswith(".quantkit"))


@pytest.fixture
def w4(tiny_vl_w4, tmp_path):
    return shutil.copytree(tiny_vl_w4, tmp_path / "w4")


def test_package_killed_between_card_and_manifest_is_finished_by_a_rerun(w4):
    _killed_package(w4, "apache-2.0")
    assert (w4 / CARD).is_file() and CARD not in read_manifest(w4)["files"]  # the half-packaged state
    notes = []
    r = package(PackageOptions(variant=w4, base_model=BASE, license="apache-2.0", run_verify=False), log=notes.append)
    assert any("interrupted" in n for n in notes), notes
    assert verify_files(w4).ok and _leftovers(w4) == []
    assert read_manifest(w4)["package"]["license"] == "apache-2.0" and r.metadata["license"] == "apache-2.0"
    res = CliRunner().invoke(main, ["verify-files", str(w4)])
    assert res.exit_code == 0 and "every sha256 matches" in res.output


def test_repackage_killed_between_card_and_manifest_then_rerun_with_other_options(w4):
    _package(w4, license="apache-2.0")
    _killed_package(w4, "mit")  # the new card (mit) is in place, quantkit.json still records the old one
    assert not verify_files(w4).ok
    _package(w4, license="cc-by-4.0")  # finishes the interrupted package, then packages as asked
    assert verify_files(w4).ok and _leftovers(w4) == []
    assert read_manifest(w4)["package"]["license"] == "cc-by-4.0" and "cc-by-4.0" in (w4 / CARD).read_text()


def test_package_killed_before_the_card_lands_leaves_the_variant_as_it_was(w4):
    _package(w4)
    before = {p.name: p.read_bytes() for p in w4.iterdir()}
    _killed_package(w4, "mit", at=CARD)
    assert _leftovers(w4)  # the temporary files a kill cannot remove
    res = CliRunner().invoke(main, ["package", str(w4), "--base-model", BASE, "--license", "apache-2.0", "--no-verify"])
    assert res.exit_code == 0, res.output + res.stderr
    assert "note:" in res.stderr and _leftovers(w4) == [] and verify_files(w4).ok
    after = {p.name: p.read_bytes() for p in w4.iterdir()}
    assert after.keys() == before.keys() and after[CARD] == before[CARD]


def test_unlisted_card_of_an_unpackaged_variant_is_replaced(w4):
    (w4 / CARD).write_text("# a README left by a package that never finished\n")
    _package(w4)
    assert verify_files(w4).ok and "a README left" not in (w4 / CARD).read_text()


def test_a_hand_edited_card_is_still_refused_in_one_line(w4):
    _package(w4)
    (w4 / CARD).write_text((w4 / CARD).read_text() + "edited by hand\n")
    with pytest.raises(VariantCorrupt, match="README.md"):
        _package(w4)
    res = CliRunner().invoke(main, ["package", str(w4), "--base-model", BASE, "--no-verify"])
    assert res.exit_code == 2 and "README.md" in _one_error_line(res.stderr)
    (w4 / CARD).unlink()  # what the refusal suggests: remove the card, package again
    _package(w4)
    assert verify_files(w4).ok


# -- item 12: bounded push: timeouts, retried reads, a lost commit answer judged by the branch ------

@pytest.fixture(scope="module")
def packaged(tiny_vl_w4, tmp_path_factory):
    v = shutil.copytree(tiny_vl_w4, tmp_path_factory.mktemp("push") / "w4")
    _package(v)
    return v


@pytest.fixture
def online(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets it for the rest of the suite
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("QUANTKIT_HUB_TIMEOUT", raising=False)


@pytest.fixture
def hub(online):
    with HubServer() as server:
        server.add_token(TOKEN, "alice", orgs=("test-org",))
        server.add_token("hf_bob", "bob")
        yield server


def _bounded(fn, limit: float = 60.0):
    """Run fn() in a thread; (result or exception, seconds). Fails the test if fn does not end in `limit`."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["value"] = e

    t0 = time.monotonic()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"still running after {limit} s: the call hangs"
    return out["value"], time.monotonic() - t0


def test_push_to_an_endpoint_that_never_answers_ends_in_one_line(online, packaged):
    with SilentServer() as silent:
        err, seconds = _bounded(lambda: push(PushOptions(variant=packaged, repo="test-org/silent",
                                                         endpoint=silent.endpoint, timeout=1)))
    assert isinstance(err, HubError), err
    msg = str(err)
    assert "\n" not in msg and "test-org/silent" in msg and "no answer" in msg and "within 1 s" in msg
    assert "nothing was committed" in msg
    assert silent.accepted >= 3  # the read was retried
    assert seconds < 15, seconds


def test_cli_push_to_an_endpoint_that_never_answers(packaged):
    with SilentServer() as silent:
        r = subprocess.run([sys.executable, "-c", "import sys; from quantkit.cli import main; sys.exit(main())",
                            "push", str(packaged), "--repo", "test-org/silent"], capture_output=True, text=True,
                           timeout=120, env=_env(HF_ENDPOINT=silent.endpoint, HF_TOKEN=TOKEN, HF_HUB_OFFLINE="0",
                                                 QUANTKIT_HUB_TIMEOUT="1"))
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_error_line(r.stderr)
    assert "test-org/silent" in line and "no answer" in line


def test_timeouts_are_restored_after_a_push(hub, packaged):
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    push(PushOptions(variant=packaged, repo="test-org/restore", endpoint=hub.endpoint, timeout=5))
    assert _http._GLOBAL_CLIENT_FACTORY is before


def test_commit_that_hangs_before_landing_is_one_line_and_rolled_back(hub, packaged):
    repo = "test-org/hang"
    hub.fail("commit", hang=True)
    err, seconds = _bounded(lambda: push(PushOptions(variant=packaged, repo=repo, revision="auto",
                                                     endpoint=hub.endpoint, timeout=1)))
    assert isinstance(err, HubError) and "\n" not in str(err), err
    assert f"committing to {repo}@" in str(err) and "no answer" in str(err) and "may not have landed" in str(err)
    assert "auto" not in {b for b in hub.state.repos[repo].branches} and seconds < 15
    assert set(hub.state.repos[repo].branches) == {"main"}  # the branch this push created is rolled back
    r = push(PushOptions(variant=packaged, repo=repo, revision="auto", endpoint=hub.endpoint))
    assert not r.unchanged and not r.answer_lost


def test_commit_that_lands_but_whose_answer_never_comes_counts_as_pushed(hub, packaged):
    hub.fail("commit", hang=True, after=True)
    r, _ = _bounded(lambda: push(PushOptions(variant=packaged, repo="test-org/landed", endpoint=hub.endpoint,
                                             timeout=1)))
    assert not isinstance(r, BaseException), r
    assert r.answer_lost and r.commit == hub.state.repos["test-org/landed"].branches["main"]
    assert "answer was lost" in r.lines()[0] and "test-org/landed@main" in r.lines()[0]
    assert push(PushOptions(variant=packaged, repo="test-org/landed", endpoint=hub.endpoint)).unchanged


def test_commit_that_lands_behind_a_gateway_error_counts_as_pushed(hub, packaged):
    hub.fail("commit", status=504, after=True, message="Gateway Timeout")
    r = push(PushOptions(variant=packaged, repo="test-org/gw", endpoint=hub.endpoint))
    assert r.answer_lost and r.commit == hub.state.repos["test-org/gw"].branches["main"]


def test_reads_are_retried_on_5xx_and_dropped_connections(hub, packaged):
    hub.fail("refs", status=503, message="Service Unavailable")
    hub.fail("tree", drop=True)
    hub.fail("info", status=502, message="Bad Gateway")
    r = push(PushOptions(variant=packaged, repo="test-org/retry", endpoint=hub.endpoint))
    assert r.commit and not r.answer_lost
    assert not any(hub.state.failures.values())  # each failure was served, and the retry after it passed


def test_reads_that_keep_failing_end_in_one_line(hub, packaged):
    hub.fail("refs", status=500, times=10)
    with pytest.raises(HubError, match=r"the Hub failed while listing the branches of test-org/r5 \(HTTP 500") as e:
        push(PushOptions(variant=packaged, repo="test-org/r5", endpoint=hub.endpoint))
    assert "\n" not in str(e.value) and "nothing was committed" in str(e.value)
    assert hub.state.failures["refs"][0].times == 10 - 3  # answered 500 three times: one try + two retries


def test_bad_timeout_setting_is_a_usage_error(hub, packaged, monkeypatch):
    monkeypatch.setenv("QUANTKIT_HUB_TIMEOUT", "soon")
    res = CliRunner().invoke(main, ["push", str(packaged), "--repo", "test-org/t"], env={"HF_ENDPOINT": hub.endpoint})
    assert res.exit_code == 2 and "QUANTKIT_HUB_TIMEOUT=soon" in _one_error_line(res.stderr)
    assert hub.requests == []


# -- the push failures of the acceptance battery, each one line and exit 2 from the CLI -----------

def _cli_push(hub_endpoint: str, variant: Path, repo: str, token: str | None = TOKEN, *extra: str):
    env = {"HF_ENDPOINT": hub_endpoint, "HF_TOKEN": token or ""}
    return CliRunner().invoke(main, ["push", str(variant), "--repo", repo, *extra], env=env)


@pytest.mark.parametrize("case", ["no-token", "401", "403", "500-preupload", "500-lfs", "500-commit", "unreachable"])
def test_cli_push_failures_are_one_line(case, online, packaged, monkeypatch):
    from huggingface_hub.utils import _http

    class _NoSleep:  # huggingface_hub backs off 1 + 2 + 4 + 8 + 8 s on a 5xx upload before giving up
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds):
            pass

    monkeypatch.setattr(_http, "time", _NoSleep())
    repo = f"test-org/fail-{case}"
    with HubServer(lfs_min_size=100_000) as hub:
        hub.add_token(TOKEN, "alice", orgs=("test-org",))
        hub.add_token("hf_bob", "bob")
        token, expect = TOKEN, None
        if case == "no-token":
            token, expect = None, "no Hub token"
        elif case == "401":
            token, expect = "hf_not_a_token", "rejected the token (401"
        elif case == "403":
            token, expect = "hf_bob", "permission denied (403)"
        elif case == "500-preupload":
            hub.fail("preupload", status=500, times=1000)
            expect = "HTTP 500"
        elif case == "500-lfs":
            hub.fail("lfs-upload", status=500, times=1000)
            expect = "HTTP 500"
        elif case == "500-commit":
            hub.fail("commit", status=500)
            expect = "HTTP 500"
        endpoint = hub.endpoint
        if case == "unreachable":
            hub.stop()  # nothing listens there any more
            expect = "network failure"
        before = hub.snapshot() if case != "unreachable" else None
        res = _cli_push(endpoint, packaged, repo, token)
        line = (_ends_in_one_error_line if case in ("500-lfs", "500-commit") else _one_error_line)(res.stderr)
        assert res.exit_code == 2 and expect in line and repo in line, line
        if case.startswith("500-") and case != "500-commit":
            assert "nothing was committed" in line
        if before is not None:
            assert repo not in hub.state.repos or hub.state.repos[repo].branches.keys() == {"main"}
            assert not any("/commit/" in p and s == 200 for m, p, s in hub.requests)
