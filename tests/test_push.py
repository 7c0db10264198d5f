"""quantkit push against a Hub-API-compatible server on 127.0.0.1 (tests/hub_server.py).

The real huggingface_hub client does real HTTP: create_repo, create_branch, preupload, one ndjson
commit per variant, refs, trees, and hf_hub_download / snapshot_download to read everything back.
"""
import shutil
import socket

import pytest
from click.testing import CliRunner

from hub_server import HubServer
from quantkit.cli import main
from quantkit.errors import HubError, UsageError, VariantCorrupt
from quantkit.manifest import MANIFEST, read_manifest, verify_files
from quantkit.publish import CARD, PackageOptions, PushOptions, package, push, read_card_metadata

BASE = "test-org/tiny-ernie45-vl"
TOKEN = "hf_test_write_token"


@pytest.fixture(scope="module")
def variants(tiny_vl, tiny_vl_w4, tmp_path_factory):
    """Packaged 4-bit and 2-bit RTN variants (cards without verify verdicts, to stay fast)."""
    from quantkit.api import QuantizeOptions, quantize

    root = tmp_path_factory.mktemp("push")
    w4 = shutil.copytree(tiny_vl_w4, root / "w4")
    w2 = quantize(QuantizeOptions(model=str(tiny_vl), out=root / "w2", bits=2, method="rtn", max_shard_size="1MB"))
    for v in (w4, w2):
        package(PackageOptions(variant=v, base_model=BASE, license="apache-2.0", run_verify=False))
    return {"w4": w4, "w2": w2}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest sets it for the rest of the suite
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with HubServer() as server:
        server.add_token(TOKEN, "alice", orgs=("test-org",))
        server.add_token("hf_bob", "bob")
        yield server


def _push(hub, variant, repo, revision="main", **kw):
    return push(PushOptions(variant=variant, repo=repo, revision=revision, endpoint=hub.endpoint, **kw))


def _local_files(variant):
    return {p: (variant / p).read_bytes() for p in [*read_manifest(variant)["files"], MANIFEST]}


def test_dry_run_prints_everything_and_sends_nothing(hub, variants, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token either
    r = _push(hub, variants["w4"], "test-org/{name}", dry_run=True)
    text = "\n".join(r.lines())
    assert hub.requests == []
    assert f"repo:    test-org/{r.plan.name.full}" in text and "branch:  main" in text
    assert f"nothing is sent to {hub.endpoint}" in text
    for path, data in _local_files(variants["w4"]).items():
        assert f"{len(data):,}  " in text and path in text
    assert f"{len(r.plan.files)} files" in text


def test_repo_per_variant_round_trip(hub, variants, tmp_path):
    from huggingface_hub import HfApi, snapshot_download

    r = _push(hub, variants["w4"], "test-org/{name}")
    repo = r.plan.repo
    assert repo == "test-org/tiny-ernie45-vl-GPTQ-Int4-g128-rtn" and not r.unchanged
    assert hub.branch_files(repo).keys() == set(_local_files(variants["w4"])) | {".gitattributes"}
    path = snapshot_download(repo, cache_dir=tmp_path / "cache", endpoint=hub.endpoint, token=TOKEN)
    for rel, data in _local_files(variants["w4"]).items():
        assert (tmp_path / "cache").exists() and open(f"{path}/{rel}", "rb").read() == data, rel
    assert verify_files(path).ok  # the card's promise: verify-files works on a download (.gitattributes and all)
    info = HfApi(endpoint=hub.endpoint, token=TOKEN).model_info(repo)
    assert info.sha == r.commit and info.card_data.base_model == BASE
    assert f"base_model:quantized:{BASE}" in info.tags and info.pipeline_tag == "image-text-to-text"
    commits = [(m, p) for m, p, s in hub.requests if "/commit/" in p]
    assert len(commits) == 1  # one commit for the whole variant


def test_branch_per_variant_round_trip_and_main_card(hub, variants, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    repo = "test-org/tiny-ernie45-vl-GPTQ"
    r4 = _push(hub, variants["w4"], repo, "auto")
    r2 = _push(hub, variants["w2"], repo, "auto")
    assert (r4.plan.revision, r2.plan.revision) == ("GPTQ-Int4-g128-rtn", "GPTQ-Int2-g64-asym-rtn")
    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", r4.plan.revision, r2.plan.revision}
    for key, r in (("w4", r4), ("w2", r2)):
        for rel, data in _local_files(variants[key]).items():
            got = hf_hub_download(repo, rel, revision=r.plan.revision, cache_dir=tmp_path / "c", endpoint=hub.endpoint)
            assert open(got, "rb").read() == data, (key, rel)
    main_files = hub.branch_files(repo, "main")
    assert set(main_files) == {".gitattributes", CARD}
    meta = read_card_metadata(main_files[CARD].decode())
    assert meta["base_model"] == BASE and meta["base_model_relation"] == "quantized"
    assert {"2-bit", "4-bit"} <= set(meta["tags"])
    card = main_files[CARD].decode()
    assert f"`{r4.plan.revision}`" in card and f"`{r2.plan.revision}`" in card
    assert api.model_info(repo).card_data.base_model_relation == "quantized"


def test_retry_of_a_pushed_variant_changes_nothing(hub, variants):
    r = _push(hub, variants["w4"], "test-org/x", "auto")
    before = hub.snapshot()
    again = _push(hub, variants["w4"], "test-org/x", "auto")
    assert again.unchanged and again.commit == r.commit and again.index_commit is None
    assert hub.snapshot() == before
    assert "nothing pushed" in again.lines()[0]


def test_branch_with_different_content_is_refused_then_updated(hub, variants):
    _push(hub, variants["w4"], "test-org/y", "shared")
    before = hub.snapshot()
    with pytest.raises(HubError, match="already holds another variant") as e:
        _push(hub, variants["w2"], "test-org/y", "shared")
    assert "\n" not in str(e.value) and "--update" in str(e.value)
    assert hub.snapshot() == before
    r = _push(hub, variants["w2"], "test-org/y", "shared", update=True)
    assert r.deleted and all(p.startswith("model-") or p == "model.safetensors.index.json" for p in r.deleted)
    assert hub.branch_files("test-org/y", "shared") == {**_local_files(variants["w2"]),
                                                        ".gitattributes": hub.branch_files("test-org/y")[".gitattributes"]}


def test_missing_token_is_one_line_and_sends_nothing(hub, variants, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hub token: set HF_TOKEN"):
        _push(hub, variants["w4"], "test-org/z")
    assert hub.requests == []
    res = CliRunner().invoke(main, ["push", str(variants["w4"]), "--repo", "test-org/z"],
                             env={"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": ""})
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: no Hub token")


def test_token_from_the_saved_login(hub, variants, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    with open(constants.HF_TOKEN_PATH, "w") as f:  # what `hf auth login` writes
        f.write(TOKEN)
    assert not _push(hub, variants["w4"], "test-org/saved").unchanged


def test_rejected_token(hub, variants, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    with pytest.raises(HubError, match=r"the Hub rejected the token \(401"):
        _push(hub, variants["w4"], "test-org/z")


def test_permission_denied_leaves_the_remote_as_it_was(hub, variants, monkeypatch):
    _push(hub, variants["w4"], "test-org/p")
    before = hub.snapshot()
    monkeypatch.setenv("HF_TOKEN", "hf_bob")  # bob is not in test-org
    with pytest.raises(HubError, match=r"permission denied \(403\).*cannot write to test-org") as e:
        _push(hub, variants["w2"], "test-org/p", "auto")
    assert "\n" not in str(e.value)
    with pytest.raises(HubError, match=r"permission denied \(403\)"):
        _push(hub, variants["w2"], "test-org/new-repo")  # create_repo in a namespace bob cannot write
    assert hub.snapshot() == before


def test_hub_errors_name_the_repo(hub, variants, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    with pytest.raises(HubError, match="test-org/named"):  # 401 while creating the repo test-org/named
        _push(hub, variants["w4"], "test-org/named")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match="no Hub token.*test-org/named"):
        _push(hub, variants["w4"], "test-org/named")


def test_network_failure_no_server(hub, variants):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(HubError, match="network failure while creating the repo") as e:
        push(PushOptions(variant=variants["w4"], repo="test-org/n", endpoint=f"http://127.0.0.1:{port}"))
    assert "nothing was committed" in str(e.value) and "\n" not in str(e.value)
    assert "test-org/n" in str(e.value)  # every push error names the repo


def test_failed_commit_leaves_the_remote_as_it_was_and_retry_works(hub, variants):
    repo = "test-org/atomic"
    _push(hub, variants["w4"], repo, "auto")
    before = hub.snapshot()
    hub.fail("commit", drop=True)  # the connection drops before the Hub answers
    with pytest.raises(HubError, match="network failure while committing to") as e:
        _push(hub, variants["w2"], repo, "auto")
    assert "re-run the same command" in str(e.value)
    assert hub.snapshot() == before  # the branch this push created is rolled back
    hub.fail("commit", status=500)
    with pytest.raises(HubError, match=r"the Hub failed while committing to .*HTTP 500"):
        _push(hub, variants["w2"], repo, "auto")
    assert hub.snapshot() == before
    r = _push(hub, variants["w2"], repo, "auto")  # the retry
    assert not r.unchanged and r.index_commit
    assert hub.branch_files(repo, r.plan.revision).keys() >= set(_local_files(variants["w2"]))


def test_lost_answer_is_judged_by_the_branch_and_a_retry_is_a_no_op(hub, variants):
    hub.fail("commit", drop=True, after=True)  # the commit lands, its answer is lost
    first = _push(hub, variants["w4"], "test-org/lost")  # the branch, read again, holds the variant
    assert first.answer_lost and first.commit == hub.state.repos["test-org/lost"].branches["main"]
    r = _push(hub, variants["w4"], "test-org/lost")
    assert r.unchanged and r.commit == first.commit
    assert [p for m, p, s in hub.requests if "/commit/" in p and s == 200] == []  # only the lost one committed


def test_branch_moved_meanwhile(hub, variants, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=hub.endpoint, token=TOKEN)
    api.create_repo("test-org/race")
    real_tree = HfApi.list_repo_tree

    def tree_then_someone_pushes(self, *a, **kw):
        out = list(real_tree(self, *a, **kw))
        api.create_commit("test-org/race", [CommitOperationAdd("other.txt", b"x")], commit_message="meanwhile")
        return out

    monkeypatch.setattr(HfApi, "list_repo_tree", tree_then_someone_pushes)
    with pytest.raises(HubError, match=r"moved while committing.*412"):
        _push(hub, variants["w4"], "test-org/race")
    assert set(hub.branch_files("test-org/race")) == {".gitattributes", "other.txt"}


def test_refuses_a_variant_without_card_or_with_bad_checksums(hub, variants, tmp_path, tiny_vl_w4):
    bare = shutil.copytree(tiny_vl_w4, tmp_path / "bare")
    with pytest.raises(UsageError, match="no model card; run `quantkit package"):
        _push(hub, bare, "test-org/c")
    bad = shutil.copytree(variants["w4"], tmp_path / "bad")
    (bad / "config.json").write_text((bad / "config.json").read_text().replace("gptq", "gptQ", 1))
    with pytest.raises(VariantCorrupt, match="does not match quantkit.json"):
        _push(hub, bad, "test-org/c", dry_run=True)
    assert hub.requests == []


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS PUT
def test_lfs_uploads_and_private_repo(variants, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubServer(lfs_min_size=100_000) as hub:  # shards and tokenizer go through the LFS batch API
        hub.add_token(TOKEN, "alice", orgs=("test-org",))
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)  # honoured when no endpoint is passed
        r = push(PushOptions(variant=variants["w2"], repo="test-org/lfs", private=True))
        assert any("/info/lfs/objects/batch" in p for _, p, _ in hub.requests)
        path = snapshot_download("test-org/lfs", cache_dir=tmp_path / "c", endpoint=hub.endpoint, token=TOKEN)
        for rel, data in _local_files(variants["w2"]).items():
            assert open(f"{path}/{rel}", "rb").read() == data, rel
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.endpoint, token=False).model_info("test-org/lfs")
        assert push(PushOptions(variant=variants["w2"], repo="test-org/lfs")).unchanged  # LFS files compare by sha256
        assert r.commit


def test_cli_push_dry_run_and_real(hub, variants):
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN}
    res = CliRunner().invoke(main, ["push", str(variants["w4"]), "--repo", "test-org/cli", "--dry-run"], env=env)
    assert res.exit_code == 0, res.output
    assert "dry run" in res.output and hub.requests == []
    res = CliRunner().invoke(main, ["push", str(variants["w4"]), "--repo", "test-org/cli"], env=env)
    assert res.exit_code == 0, res.output + res.stderr
    assert res.output.startswith("pushed tiny-ernie45-vl-GPTQ-Int4-g128-rtn to test-org/cli@main")
    hub.fail("commit", status=503, message="Service Unavailable")
    res = CliRunner().invoke(main, ["push", str(variants["w2"]), "--repo", "test-org/cli", "--update"], env=env)
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "HTTP 503" in res.stderr
