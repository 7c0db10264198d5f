"""A small Hugging Face Hub API server on 127.0.0.1, for tests only (never shipped behaviour).

It speaks the HTTP API that huggingface_hub's own client uses to create repos and branches, commit
files, list refs and trees, and download files, so tests run the real client over real HTTP:

  POST   /api/repos/create                              {"name", "organization", "visibility"}
  GET    /api/whoami-v2
  POST   /api/validate-yaml                             {"content", "repoType"} -> {"errors", "warnings"}
  GET    /api/models/{ns}/{name}[/revision/{rev}]       ModelInfo (sha, siblings, cardData, tags, ...)
  GET    /api/models/{ns}/{name}/refs[?include_prs=1]
  GET    /api/models/{ns}/{name}/tree/{rev}[/{path}]    ?recursive=true
  POST   /api/models/{ns}/{name}/preupload/{rev}        -> uploadMode "regular" (or "lfs", see lfs_min_size)
  POST   /api/models/{ns}/{name}/commit/{rev}           ndjson: header, file, lfsFile, deletedFile,
                                                        deletedFolder; ?create_pr=1; parentCommit -> 412
  POST   /api/models/{ns}/{name}/branch/{branch}        {"startingPoint"}; 409 when it exists
  DELETE /api/models/{ns}/{name}/branch/{branch}
  POST   /{ns}/{name}.git/info/lfs/objects/batch        LFS batch API ("basic" transfer)
  PUT    /_lfs/{sha256}   POST /_lfs/verify             the LFS object store the batch answer points to
  GET    /{ns}/{name}/resolve/{rev}/{path}  (and HEAD)  X-Repo-Commit, ETag / X-Linked-Etag, Content-Length

Errors carry the headers the client maps to its exception classes (`X-Error-Code: RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`; `X-Error-Message`). A commit is validated in full before it is
applied, under one lock, so a failed commit changes nothing (as on the Hub).

Failures on demand: `hub.fail(route, status=500)` answers the next call of a route with that status;
`hub.fail(route, drop=True)` reads the request and closes the connection without an answer (a network
failure); `after=True` applies the request first and then drops the answer (the commit landed but the
client never heard), or with a `status` answers that status after applying it (a gateway error on a
commit that landed); `hang=True` reads the request and never answers (until the server stops), after
applying it with `after=True`. Routes: create, whoami, validate, info, refs, tree, preupload, commit,
branch, lfs-batch, lfs-upload, resolve.

`SilentServer` accepts connections on 127.0.0.1 and never answers anything (a Hub or proxy that hangs).

Tokens: `hub.add_token(token, user, orgs=..., write=True)`. No token, or an unknown one, is 401 on
writes; a token without rights on a namespace gets 403; private repos are invisible (404) to others.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""
KNOWN_LICENSES = {"apache-2.0", "mit", "other", "unknown", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0",
                  "cc-by-nc-sa-4.0", "bsd-3-clause", "bsd-2-clause", "gpl-3.0", "lgpl-3.0", "agpl-3.0",
                  "openrail", "llama2", "llama3", "llama3.1", "gemma", "cc0-1.0", "afl-3.0", "artistic-2.0"}
PIPELINE_TAGS = {"text-generation", "image-text-to-text", "text2text-generation", "feature-extraction",
                 "image-to-text", "visual-question-answering", "text-classification", "any-to-any"}
RELATIONS = {"adapter", "merge", "quantized", "finetune"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Blob:
    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n").encode()

    @property
    def oid(self) -> str:
        """The git blob id as the Hub reports it: of the content, or of the LFS pointer."""
        return git_blob_sha1(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, Blob]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    id: str
    private: bool
    created: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit oid
    prs: dict[int, str] = field(default_factory=dict)  # number -> commit oid


@dataclass
class Failure:
    status: int | None
    drop: bool
    after: bool
    message: str
    times: int
    hang: bool = False


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubState:
    """Repos, LFS objects, tokens, injected failures and a request log, behind one lock."""

    def __init__(self, lfs_min_size: int | None = None):
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.tokens: dict[str, dict] = {}
        self.failures: dict[str, list[Failure]] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.lfs_min_size = lfs_min_size  # None: every file "regular"; else files >= this size go "lfs"
        self.stopping = threading.Event()  # releases handlers that hang
        self._counter = 0

    # -- helpers ---------------------------------------------------------------------------------
    def now(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, Blob], title: str, message: str = "") -> Commit:
        self._counter += 1
        h = hashlib.sha1(f"{repo.id}\n{parent}\n{title}\n{self._counter}\n".encode())
        for path in sorted(files):
            h.update(f"{path}\0{files[path].oid}\n".encode())
        c = Commit(h.hexdigest(), parent, dict(files), title, message, self.now())
        repo.commits[c.oid] = c
        return c

    def take_failure(self, route: str) -> Failure | None:
        with self.lock:
            queue = self.failures.get(route) or []
            if not queue:
                return None
            f = queue[0]
            f.times -= 1
            if f.times <= 0:
                queue.pop(0)
            return f


class HubServer:
    """`with HubServer() as hub:` serves on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, lfs_min_size: int | None = None):
        self.state = HubState(lfs_min_size)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.state.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- test controls ---------------------------------------------------------------------------
    def add_token(self, token: str, user: str, orgs: tuple[str, ...] = (), write: bool = True) -> None:
        self.state.tokens[token] = {"user": user, "orgs": tuple(orgs), "write": write}

    def fail(self, route: str, status: int | None = 500, *, drop: bool = False, after: bool = False,
             hang: bool = False, message: str = "Internal Error (injected by the test)", times: int = 1) -> None:
        with self.state.lock:
            self.state.failures.setdefault(route, []).append(Failure(None if drop or hang else status, drop, after,
                                                                     message, times, hang))

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        return list(self.state.requests)

    def branch_files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        with self.state.lock:
            repo = self.state.repos[repo_id]
            return {p: b.data for p, b in repo.commits[repo.branches[branch]].files.items()}

    def snapshot(self) -> str:
        """A digest of every repo's refs and trees: equal before and after means nothing changed."""
        with self.state.lock:
            h = hashlib.sha256()
            for rid in sorted(self.state.repos):
                repo = self.state.repos[rid]
                h.update(f"{rid} {repo.private}\n".encode())
                for name in sorted(repo.branches):
                    h.update(f"{name} {repo.branches[name]}\n".encode())
                for n in sorted(repo.prs):
                    h.update(f"pr{n} {repo.prs[n]}\n".encode())
            return h.hexdigest()


class SilentServer:
    """`with SilentServer() as s:` listens on 127.0.0.1 (s.endpoint), accepts every connection and never
    answers: reads what the client sends and holds the connection open until the server stops."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.endpoint = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-server", daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # timeout: look at the stop flag again
                continue
            conn.setblocking(False)
            self._conns.append(conn)
            self.accepted += 1
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class _Dropped(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "quantkit-test-hub/1"
    timeout = 30

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr log
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def st(self) -> HubState:
        return self.hub.state

    # -- plumbing --------------------------------------------------------------------------------
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.segments = [unquote(s) for s in url.path.split("/")[1:]]
        self.body = self._body() if method in ("POST", "PUT", "DELETE") else b""
        self.method = method
        status = 500
        try:
            route, handler, args = self._route(method, self.segments)
            failure = self.st.take_failure(route)
            if failure and failure.hang and not failure.after:
                self.st.stopping.wait(120)
                raise _Dropped()
            if failure and failure.drop and not failure.after:
                raise _Dropped()
            if failure and failure.status and not failure.after:
                raise HubError(failure.status, failure.message)
            status, payload, headers = handler(*args)
            if failure and failure.hang:  # after=True: the work is done, the answer never comes
                self.st.stopping.wait(120)
                raise _Dropped()
            if failure and failure.drop:  # after=True: the work is done, the answer is lost
                raise _Dropped()
            if failure and failure.status:  # after=True: the work is done, the answer is an error
                raise HubError(failure.status, failure.message)
            self._send(status, payload, headers)
        except _Dropped:
            status = 0
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        except HubError as e:
            status = e.status
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(e.status, {"error": e.message}, headers)
        except Exception as e:  # a bug in this server: answer 500 so the test shows it
            self._send(500, {"error": f"test hub bug: {e.__class__.__name__}: {e}"}, {})
        finally:
            with self.st.lock:
                self.st.requests.append((method, self.path, status))

    def _send(self, status: int, payload, headers: dict) -> None:
        if isinstance(payload, (bytes, bytearray)):
            data, ctype = bytes(payload), "application/octet-stream"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", ctype))
        length = headers.pop("Content-Length", None)
        self.send_header("Content-Length", str(length if length is not None else len(data)))
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.method != "HEAD":
            self.wfile.write(data)

    def _route(self, method: str, s: list[str]):
        if s[:1] == ["api"]:
            if s[1:] == ["repos", "create"] and method == "POST":
                return "create", self.create_repo, ()
            if s[1:] == ["whoami-v2"] and method == "GET":
                return "whoami", self.whoami, ()
            if s[1:] == ["validate-yaml"] and method == "POST":
                return "validate", self.validate_yaml, ()
            if len(s) >= 4 and s[1] == "models":
                rid, rest = f"{s[2]}/{s[3]}", s[4:]
                if not rest and method == "GET":
                    return "info", self.model_info, (rid, None)
                if rest[:1] == ["revision"] and len(rest) == 2 and method == "GET":
                    return "info", self.model_info, (rid, rest[1])
                if rest == ["refs"] and method == "GET":
                    return "refs", self.refs, (rid,)
                if rest[:1] == ["tree"] and len(rest) >= 2 and method == "GET":
                    return "tree", self.tree, (rid, rest[1], "/".join(rest[2:]))
                if rest[:1] == ["preupload"] and len(rest) == 2 and method == "POST":
                    return "preupload", self.preupload, (rid, rest[1])
                if rest[:1] == ["commit"] and len(rest) == 2 and method == "POST":
                    return "commit", self.commit, (rid, rest[1])
                if rest[:1] == ["branch"] and len(rest) == 2 and method in ("POST", "DELETE"):
                    return "branch", (self.create_branch if method == "POST" else self.delete_branch), (rid, rest[1])
        if s[:1] == ["_lfs"]:
            if s[1:] == ["verify"] and method == "POST":
                return "lfs-upload", self.lfs_verify, ()
            if len(s) == 2 and method == "PUT":
                return "lfs-upload", self.lfs_put, (s[1],)
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            return "lfs-batch", self.lfs_batch, (f"{s[0]}/{s[1][:-4]}",)
        if len(s) >= 5 and s[2] == "resolve" and method in ("GET", "HEAD"):
            return "resolve", self.resolve, (f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
        raise HubError(404, f"no such endpoint in the test hub: {method} /{'/'.join(s)}")

    # -- auth and lookups ------------------------------------------------------------------------
    def _user(self, required: bool) -> dict | None:
        auth = self.headers.get("authorization") or ""
        if not auth:
            if required:
                raise HubError(401, "Invalid username or password.")
            return None
        token = auth.split(" ", 1)[1] if " " in auth else auth
        info = self.st.tokens.get(token)
        if info is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return info

    @staticmethod
    def _can_write(user: dict | None, ns: str) -> bool:
        return bool(user and user["write"] and (user["user"] == ns or ns in user["orgs"]))

    @staticmethod
    def _can_read(user: dict | None, repo: Repo) -> bool:
        ns = repo.id.split("/")[0]
        return not repo.private or bool(user and (user["user"] == ns or ns in user["orgs"]))

    def _repo(self, rid: str, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.st.repos.get(rid)
        if repo is None or not self._can_read(user, repo):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and not self._can_write(user, rid.split("/")[0]):
            raise HubError(403, f"You don't have the rights to write to {rid}")
        return repo

    def _resolve_rev(self, repo: Repo, rev: str) -> Commit:
        if rev in repo.branches:
            return repo.commits[repo.branches[rev]]
        m = re.fullmatch(r"refs/pr/(\d+)", rev)
        if m and int(m.group(1)) in repo.prs:
            return repo.commits[repo.prs[int(m.group(1))]]
        if rev in repo.commits:
            return repo.commits[rev]
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    def _url(self, path: str = "") -> str:
        return f"{self.hub.endpoint}/{path}"

    # -- endpoints -------------------------------------------------------------------------------
    def create_repo(self):
        user = self._user(required=True)
        p = json.loads(self.body or b"{}")
        if p.get("type", "model") != "model":
            raise HubError(400, "the test hub only holds model repos")
        name, ns = p.get("name") or "", p.get("organization") or user["user"]
        rid = f"{ns}/{name}"
        if not _HUB_ID.match(rid) or len(name) > 96 or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name {rid!r}")
        if not self._can_write(user, ns):
            raise HubError(403, f"You don't have the rights to create a model under the namespace \"{ns}\"")
        with self.st.lock:
            if rid in self.st.repos:
                return 409, {"error": "You already created this model repo", "url": self._url(rid)}, \
                    {"X-Error-Message": "You already created this model repo"}
            repo = Repo(rid, p.get("visibility") == "private" or bool(p.get("private")), self.st.now())
            c = self.st.new_commit(repo, None, {".gitattributes": Blob(GITATTRIBUTES)}, "initial commit")
            repo.branches["main"] = c.oid
            self.st.repos[rid] = repo
        return 200, {"url": self._url(rid), "name": rid, "id": hashlib.md5(rid.encode()).hexdigest()[:24]}, {}

    def whoami(self):
        user = self._user(required=True)
        return 200, {"type": "user", "name": user["user"], "orgs": [{"name": o} for o in user["orgs"]],
                     "auth": {"type": "access_token",
                              "accessToken": {"role": "write" if user["write"] else "read"}}}, {}

    def validate_yaml(self):
        p = json.loads(self.body or b"{}")
        errors, warnings = _validate_card(p.get("content", ""))
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors],
                                          "warnings": [{"message": w} for w in warnings]}, {}

    def model_info(self, rid: str, rev: str | None):
        with self.st.lock:
            repo = self._repo(rid)
            c = self._resolve_rev(repo, rev or "main")
            meta = {}
            if "README.md" in c.files:
                try:
                    meta = _front_matter(c.files["README.md"].data.decode())[0] or {}
                except (ValueError, UnicodeDecodeError):
                    meta = {}
            tags = list(meta.get("tags") or [])
            if meta.get("base_model") and meta.get("base_model_relation"):
                bases = meta["base_model"] if isinstance(meta["base_model"], list) else [meta["base_model"]]
                tags += [f"base_model:{meta['base_model_relation']}:{b}" for b in bases]
            blobs = self.query.get("blobs") in ("1", "true", "True")
            siblings = []
            for path, b in sorted(c.files.items()):
                sib = {"rfilename": path}
                if blobs:
                    sib.update({"size": len(b.data), "blobId": b.oid})
                    if b.lfs:
                        sib["lfs"] = {"size": len(b.data), "sha256": b.sha256, "pointerSize": len(b.pointer)}
                siblings.append(sib)
            return 200, {"_id": hashlib.md5(rid.encode()).hexdigest()[:24], "id": rid, "modelId": rid,
                         "author": rid.split("/")[0], "sha": c.oid, "lastModified": c.date, "createdAt": repo.created,
                         "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                         "tags": tags, "pipeline_tag": meta.get("pipeline_tag"),
                         "library_name": meta.get("library_name"), "cardData": meta or None,
                         "siblings": siblings, "spaces": [],
                         "usedStorage": sum(len(b.data) for b in c.files.values())}, {}

    def refs(self, rid: str):
        with self.st.lock:
            repo = self._repo(rid)
            out = {"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid}
                                for n, oid in sorted(repo.branches.items())],
                   "converts": [], "tags": []}
            if self.query.get("include_prs") in ("1", "true"):
                out["pullRequests"] = [{"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": oid}
                                       for n, oid in sorted(repo.prs.items())]
            return 200, out, {}

    def tree(self, rid: str, rev: str, path: str):
        with self.st.lock:
            repo = self._repo(rid)
            c = self._resolve_rev(repo, rev)
        recursive = self.query.get("recursive") in ("1", "true", "True")
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in c.files):
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        entries, dirs = [], set()
        for p, b in sorted(c.files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": git_blob_sha1(d.encode()), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                e = {"type": "file", "oid": b.oid, "size": len(b.data), "path": p}
                if b.lfs:
                    e["lfs"] = {"oid": b.sha256, "size": len(b.data), "pointerSize": len(b.pointer)}
                entries.append(e)
        return 200, entries, {}

    def preupload(self, rid: str, rev: str):
        with self.st.lock:
            repo = self._repo(rid, write=True)
            c = self._resolve_rev(repo, rev)
        files = []
        for f in json.loads(self.body or b"{}").get("files", []):
            lfs = self.st.lfs_min_size is not None and f["size"] >= self.st.lfs_min_size
            remote = c.files.get(f["path"])
            oid = (remote.sha256 if remote.lfs else remote.oid) if remote else None
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {"files": files, "commitOid": c.oid}, {}

    def commit(self, rid: str, rev: str):
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line must be the commit header")
        header = lines[0]["value"]
        if not header.get("summary"):
            raise HubError(400, "commit summary is required")
        with self.st.lock:
            repo = self._repo(rid, write=True)
            create_pr = self.query.get("create_pr") in ("1", "true")
            head = self._resolve_rev(repo, rev)
            if not create_pr and rev not in repo.branches:
                raise HubError(400, f"{rev} is not a branch: commits go to branches")
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in lines[1:]:  # validate and build the new tree; nothing is applied until all pass
                key, v = op.get("key"), op.get("value") or {}
                path = v.get("path", "")
                if not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, f"invalid path {path!r}")
                if key == "file":
                    if v.get("encoding") != "base64":
                        raise HubError(400, "file content must be base64")
                    files[path] = Blob(base64.b64decode(v["content"]))
                elif key == "lfsFile":
                    data = self.st.lfs.get(v.get("oid", ""))
                    if data is None or len(data) != v.get("size"):
                        raise HubError(422, f"LFS object {v.get('oid')} of {path} was not uploaded")
                    files[path] = Blob(data, lfs=True)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            c = self.st.new_commit(repo, head.oid, files, header["summary"], header.get("description", ""))
            out = {"success": True, "commitOid": c.oid, "commitUrl": self._url(f"{rid}/commit/{c.oid}"),
                   "hookOutput": ""}
            if create_pr:
                n = max(repo.prs, default=0) + 1
                repo.prs[n] = c.oid
                out["pullRequestUrl"] = self._url(f"{rid}/discussions/{n}")
            else:
                repo.branches[rev] = c.oid
        return 200, out, {}

    def create_branch(self, rid: str, branch: str):
        with self.st.lock:
            repo = self._repo(rid, write=True)
            if branch.startswith("refs/") or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*", branch) or ".." in branch:
                raise HubError(400, f"Invalid reference for a branch: {branch}")
            if branch in repo.branches:
                raise HubError(409, "Reference already exists")
            start = json.loads(self.body or b"{}").get("startingPoint") or "main"
            repo.branches[branch] = self._resolve_rev(repo, start).oid
        return 200, {}, {}

    def delete_branch(self, rid: str, branch: str):
        with self.st.lock:
            repo = self._repo(rid, write=True)
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            del repo.branches[branch]
        return 200, {}, {}

    def lfs_batch(self, rid: str):
        with self.st.lock:
            self._repo(rid, write=True)
        p = json.loads(self.body or b"{}")
        if p.get("operation") != "upload":
            raise HubError(400, "the test hub takes LFS uploads only")
        objects = []
        for o in p.get("objects", []):
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.st.lfs:
                entry["actions"] = {"upload": {"href": self._url(f"_lfs/{o['oid']}"), "header": {}},
                                    "verify": {"href": self._url("_lfs/verify"), "header": {}}}
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def lfs_put(self, oid: str):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        with self.st.lock:
            self.st.lfs[oid] = self.body
        return 200, b"", {}

    def lfs_verify(self):
        p = json.loads(self.body or b"{}")
        data = self.st.lfs.get(p.get("oid", ""))
        if data is None or len(data) != p.get("size"):
            raise HubError(404, "LFS object not found")
        return 200, {}, {}

    def resolve(self, rid: str, rev: str, path: str):
        with self.st.lock:
            repo = self._repo(rid)
            c = self._resolve_rev(repo, rev)
            b = c.files.get(path)
        if b is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": c.oid})
        headers = {"X-Repo-Commit": c.oid, "ETag": f'"{b.etag}"', "Accept-Ranges": "bytes"}
        if b.lfs:
            headers.update({"X-Linked-Etag": f'"{b.sha256}"', "X-Linked-Size": len(b.data)})
        return 200, b.data, headers


def _front_matter(content: str) -> tuple[dict | None, bool]:
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
    if not m:
        return None, False
    data = yaml.safe_load(m.group(1))
    if data is not None and not isinstance(data, dict):
        raise ValueError("metadata must be a YAML mapping")
    return data or {}, True


def _validate_card(content: str) -> tuple[list[str], list[str]]:
    """The checks the Hub makes on a model card's metadata (the subset a quantized card exercises)."""
    try:
        meta, present = _front_matter(content)
    except (yaml.YAMLError, ValueError) as e:
        return [f"Invalid YAML metadata: {str(e).splitlines()[0]}"], []
    if not present or not meta:
        return [], ["empty or missing yaml metadata in repo card"]
    errors = []
    lic = meta.get("license")
    if lic is not None and (not isinstance(lic, str) or lic not in KNOWN_LICENSES):
        errors.append(f'"license" must be one of [{", ".join(sorted(KNOWN_LICENSES))}]')
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append('"tags" must be an array of strings')
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        errors.append(f'"pipeline_tag" must be one of [{", ".join(sorted(PIPELINE_TAGS))}]')
    base = meta.get("base_model")
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        if not all(isinstance(b, str) and _HUB_ID.match(b) for b in bases):
            errors.append('"base_model" must be a model id (ORG/NAME) or a list of them')
    rel = meta.get("base_model_relation")
    if rel is not None:
        if rel not in RELATIONS:
            errors.append(f'"base_model_relation" must be one of [{", ".join(sorted(RELATIONS))}]')
        if base is None:
            errors.append('"base_model_relation" needs "base_model"')
    if "library_name" in meta and not isinstance(meta["library_name"], str):
        errors.append('"library_name" must be a string')
    return errors, []
