"""A real S3-API server for the tiering tests: moto in server mode, one process on a loopback
port, driven with boto3 the way an operator would look at a bucket.

`moto_server` is found like tiering/tests/support/moto.rs finds it: $STRATA_MOTO_SERVER, else
$STRATA_VENV/bin/moto_server, else the repository's .venv/bin/moto_server, else PATH. A missing
moto fails the test with the install command; it never skips it.

moto keeps everything in memory, so a killed server comes back empty. A `MotoServer` made with
`persist=True` makes a restart honest: moto's request recorder (MOTO_ENABLE_RECORDING) appends
every request it receives, body included, to a file in the server's work dir *before* handling
it, and `start()` replays the previous run's mutating requests (PUT, POST, DELETE) into the
fresh process, in arrival order, before the test carries on. The new process records too
(replayed requests included), so any number of kills and restarts keep the bucket's contents.
A request that reached moto just before the kill is replayed even if its client never saw the
answer, which S3 allows (a PUT may take effect without a response) and which idempotent,
whole-object uploads tolerate.

What a client sees across `kill()` and `start()`: connection resets for requests in flight,
then connection refused until the new process listens, then (for a short replay window) a
bucket being refilled. The tests that kill moto only read from it after `start()` returns.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = "strata"
REGION = "us-east-1"
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
STARTUP_TIMEOUT_S = 60.0
MUTATING_METHODS = {"PUT", "POST", "DELETE"}
# Hop-by-hop or framing headers that the replaying HTTP client must set itself.
REPLAY_DROP_HEADERS = {"transfer-encoding", "expect", "connection", "content-length",
                       "keep-alive"}


def moto_server_binary() -> Path:
    """The moto_server executable; fails the calling test (never skips) when it is missing."""
    candidates: list[Path] = []
    if os.environ.get("STRATA_MOTO_SERVER"):
        candidates.append(Path(os.environ["STRATA_MOTO_SERVER"]))
    if os.environ.get("STRATA_VENV"):
        candidates.append(Path(os.environ["STRATA_VENV"]) / "bin" / "moto_server")
    candidates.append(REPO_ROOT / ".venv" / "bin" / "moto_server")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d:
            candidates.append(Path(d) / "moto_server")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(
        "moto_server (an S3-API server) is needed by the tiering tests and was not found. "
        "Install it into the test virtualenv: "
        "`.venv/bin/pip install -r tiering/tests/requirements.txt` "
        "(or set STRATA_MOTO_SERVER to the moto_server binary). Looked at: "
        + ", ".join(str(c) for c in candidates[:4]) + ", and PATH",
        pytrace=False)


@dataclass(frozen=True)
class S3Object:
    key: str
    size: int


class MotoError(AssertionError):
    pass


class MotoServer:
    """One moto_server process on a fixed port (kept across kill/start); see the module doc."""

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = False,
                 bucket: str = BUCKET):
        self.binary = moto_server_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persist = persist
        self.bucket = bucket
        self.log_path = self.workdir / "moto.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._client = None

    # ---- process ------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def recording(self, start: int) -> Path:
        return self.workdir / f"recording-{start}.jsonl"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "MotoServer":
        """Start moto, wait until it answers, restore the previous run's state (persist=True)
        and make sure the bucket exists."""
        assert not self.alive(), "moto is already running"
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOTO_")}
        # Fake credentials for anything in moto that signs requests itself.
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
                   AWS_DEFAULT_REGION=REGION)
        if self.persist:
            env["MOTO_ENABLE_RECORDING"] = "1"
            env["MOTO_RECORDER_FILEPATH"] = str(self.recording(self.starts))
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== moto start #{self.starts} on port {self.port}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise MotoError(f"moto_server exited with {self.proc.returncode} during "
                                f"startup\n{self.log_tail()}")
            try:
                status, _ = self._request("GET", "/")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise MotoError(f"moto_server did not answer on {self.endpoint} within "
                                f"{STARTUP_TIMEOUT_S:.0f} s\n{self.log_tail()}")
            time.sleep(0.1)
        if self.persist and self.starts > 1:
            self._replay(self.recording(self.starts - 1))
        if not self.bucket_exists():
            self.client().create_bucket(Bucket=self.bucket)
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation (with its memory; see persist)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    stop = kill

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError as e:
            return f"(no moto log: {e})"
        tail = text.splitlines()[-lines:]
        return f"---- last {len(tail)} lines of {self.log_path} ----\n" + "\n".join(tail)

    # ---- raw HTTP and replay ------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes = b"",
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    @staticmethod
    def read_recording(path: Path) -> list[dict]:
        """The requests in a recording, in arrival order. moto writes each entry's JSON and its
        newline separately, so concurrent requests can leave two objects on one line, and a
        kill can cut the last one short: decode object by object and drop a torn tail."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        decoder = json.JSONDecoder()
        out, pos = [], 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return out
            try:
                entry, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                # Only the very end of the file may be torn.
                rest = text[pos:]
                assert "\n{" not in rest.rstrip(), (
                    f"{path}: undecodable entry at byte {pos} that is not the last one")
                return out
            out.append(entry)

    def _replay(self, path: Path) -> None:
        import base64
        entries = self.read_recording(path)
        assert entries, f"nothing recorded in {path}: moto's recorder did not run"
        replayed = 0
        for e in entries:
            method = e.get("method", "")
            url = urlsplit(e["url"])
            target = url.path + (f"?{url.query}" if url.query else "")
            if method not in MUTATING_METHODS or url.path.startswith("/moto-api/"):
                continue
            body = e.get("body") or b""
            if e.get("body_encoded"):
                body = base64.b64decode(body)
            elif isinstance(body, str):
                body = body.encode()
            headers = {k: v for k, v in (e.get("headers") or {}).items()
                       if k.lower() not in REPLAY_DROP_HEADERS}
            declared = {k.lower(): v for k, v in (e.get("headers") or {}).items()}
            if "content-length" not in declared and "chunked" in declared.get(
                    "transfer-encoding", ""):
                # moto's recorder keeps no body without a Content-Length.
                raise MotoError(f"recording {path.name}: {method} {target} used chunked "
                                "transfer encoding, whose body moto does not record")
            if declared.get("content-length") not in (None, "", str(len(body))):
                raise MotoError(f"recording {path.name}: {method} {target} declared "
                                f"{declared['content-length']} bytes, recorded {len(body)}")
            self._request(method, target, body=body, headers=headers, timeout_s=30)
            replayed += 1
        with open(self.log_path, "ab") as log:
            log.write(f"==== replayed {replayed} requests from {path.name}\n".encode())

    # ---- boto3 --------------------------------------------------------------------------------

    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config
            self._client = boto3.client(
                "s3", endpoint_url=self.endpoint, region_name=REGION,
                aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
                config=Config(s3={"addressing_style": "path"},
                              retries={"max_attempts": 2, "mode": "standard"},
                              connect_timeout=5, read_timeout=30))
        return self._client

    def bucket_exists(self) -> bool:
        from botocore.exceptions import ClientError
        try:
            self.client().head_bucket(Bucket=self.bucket)
            return True
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                return False
            raise

    def list_objects(self, prefix: str = "") -> list[S3Object]:
        """Every object under prefix, in key order."""
        out = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                out.append(S3Object(o["Key"], o["Size"]))
        return sorted(out, key=lambda o: o.key)

    def get_object(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def put_object(self, key: str, body: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def download(self, prefix: str, dest: Path) -> list[Path]:
        """Copy every object under prefix to dest, keeping the key's path below prefix."""
        paths = []
        for o in self.list_objects(prefix):
            rel = o.key[len(prefix):].lstrip("/")
            path = Path(dest) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.get_object(o.key))
            assert path.stat().st_size == o.size, f"{o.key}: got {path.stat().st_size} of {o.size}"
            paths.append(path)
        return paths

    # ---- broker config ------------------------------------------------------------------------

    def tiering_toml(self, prefix: str, upload_interval_ms: int = 200, max_retries: int = 2,
                     retry_timeout_ms: int = 3000) -> str:
        """The broker's [tiering] section for s3://<bucket>/<prefix> on this server."""
        return (
            "[tiering]\n"
            f'url = "s3://{self.bucket}/{prefix}"\n'
            f"upload_interval_ms = {upload_interval_ms}\n"
            "[tiering.s3]\n"
            f'endpoint = "{self.endpoint}"\n'
            f'region = "{REGION}"\n'
            "path_style = true\n"
            "allow_http = true\n"
            f'access_key_id = "{ACCESS_KEY_ID}"\n'
            f'secret_access_key = "{SECRET_ACCESS_KEY}"\n'
            "[tiering.retry]\n"
            f"max_retries = {max_retries}\n"
            f"retry_timeout_ms = {retry_timeout_ms}\n")
