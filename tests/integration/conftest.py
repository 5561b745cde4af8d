"""Fixtures that run the real `strata` binary for the integration suite.

A `Broker` owns one broker process: a port chosen by binding 127.0.0.1:0, a data directory, and
a log file that captures the broker's stdout and stderr. It can be stopped gracefully (SIGTERM,
which must exit 0 within 10 s), killed (SIGKILL) and restarted on the same port and data dir.

When a test fails, the tail of every broker log that was live during it is attached to the
report, so a failure shows what the broker said.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 80


def strata_binary() -> Path:
    """The broker binary: $STRATA_BIN, else $CARGO_TARGET_DIR/debug/strata, else target/."""
    explicit = os.environ.get("STRATA_BIN")
    if explicit:
        return Path(explicit).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug" / "strata"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never one this session handed out before: the kernel
    may offer a port again as soon as the probe closes, and two brokers of one cluster given
    the same port refuse to start (their voters' addresses would be listed twice)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class BrokerError(AssertionError):
    pass


class Broker:
    """One strata broker process; see the module doc."""

    # Every broker created in this pytest process, for the failure report hook.
    registry: list["Broker"] = []

    def __init__(self, binary: Path, workdir: Path, name: str = "broker",
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", command_prefix: tuple[str, ...] = ()):
        """`host` is the address the broker listens on and advertises (the test reaches it
        there); `command_prefix` runs the binary through a wrapper, e.g.
        `("ip", "netns", "exec", ns)`, which must exec it so the pid stays the broker's."""
        self.binary = binary
        self.workdir = workdir
        self.port_retries = 0
        self.name = name
        self.data_dir = workdir / "data"
        self.log_path = workdir / "strata.log"
        self.host = host
        self.command_prefix = tuple(command_prefix)
        self.port = free_port()
        self.extra_args = tuple(extra_args)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        # Wall-clock interval during which this broker was live, for the report hook.
        self.live_since: float | None = None
        self.live_until: float | None = None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        Broker.registry.append(self)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "broker not started"
        return self.proc.pid

    def command(self) -> list[str]:
        return [
            *self.command_prefix,
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--advertised-listener", self.bootstrap,
            *self.extra_args,
        ]

    def _env(self) -> dict[str, str]:
        # The broker reads STRATA_* settings from the environment: keep the developer's own
        # out of the test so every run sees the documented defaults.
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        env.setdefault("RUST_BACKTRACE", "1")
        # Many brokers run at once: no admin HTTP port unless a test asks for one.
        env["STRATA_HTTP_LISTEN"] = ""
        # Nor a raft RPC port: a lone broker needs none (cluster tests set their own).
        env["STRATA_RAFT_LISTEN"] = ""
        env.update(self.extra_env)
        return env

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "Broker":
        assert not self.alive(), f"{self.name} is already running"
        if not self.binary.is_file():
            raise BrokerError(
                f"strata binary not found at {self.binary}: build it with `cargo build` "
                "or point STRATA_BIN at it")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=self._env(), cwd=self.workdir, start_new_session=True)
        self.live_since = self.live_since or time.time()
        self.live_until = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                # free_port() cannot reserve the port: another process may take it before the
                # broker binds. On a first start no client knows the port yet: take another.
                if (self.starts == 1 and self.port_retries < 3
                        and f"cannot listen on {self.bootstrap}" in self.log_tail(5)):
                    self.port_retries += 1
                    self.starts = 0
                    self.port = free_port()
                    return self.start(timeout_s)
                raise BrokerError(
                    f"{self.name} exited with {self.proc.returncode} during startup\n"
                    + self.log_tail())
            if port_accepts(self.port, self.host):
                return self
            time.sleep(0.05)
        self.kill()
        raise BrokerError(
            f"{self.name} did not accept connections on {self.bootstrap} within {timeout_s:.0f} s\n"
            + self.log_tail())

    def start_expecting_exit(self, timeout_s: float = 10.0) -> tuple[int, str]:
        """Start a broker that must refuse to run: wait for it to exit by itself within
        timeout_s and return (exit code, what it printed during this start)."""
        assert not self.alive(), f"{self.name} is already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            since = log.tell()
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=self._env(), cwd=self.workdir, start_new_session=True)
        self.live_since = self.live_since or time.time()
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerError(
                f"{self.name} was expected to exit but still ran after {timeout_s:.0f} s\n"
                + self.log_tail())
        finally:
            self.live_until = time.time()
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return rc, log.read().decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """SIGTERM; assert exit code 0 within timeout_s. Returns the seconds it took."""
        assert self.proc is not None, "broker not started"
        if self.proc.poll() is not None:
            raise BrokerError(
                f"{self.name} had already exited with {self.proc.returncode} before stop()\n"
                + self.log_tail())
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BrokerError(
                f"{self.name} did not exit within {timeout_s:.0f} s of SIGTERM\n" + self.log_tail())
        finally:
            self.live_until = time.time()
        took = time.monotonic() - t0
        if rc != 0:
            raise BrokerError(f"{self.name} exited with {rc} after SIGTERM\n" + self.log_tail())
        return took

    def kill(self) -> None:
        """SIGKILL, no grace: what a crash or an OOM kill does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self.live_until = time.time()

    def restart(self) -> "Broker":
        """Stop gracefully if running, then start again on the same port and data dir."""
        if self.alive():
            self.stop()
        return self.start()

    def assert_alive(self) -> None:
        if not self.alive():
            rc = self.proc.returncode if self.proc else None
            raise BrokerError(f"{self.name} is not running (exit code {rc})\n" + self.log_tail())

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError as e:
            return f"(no broker log: {e})"
        tail = text.splitlines()[-lines:]
        return f"---- last {len(tail)} lines of {self.log_path} ----\n" + "\n".join(tail)

    def was_live_between(self, t0: float, t1: float) -> bool:
        if self.live_since is None:
            return False
        until = self.live_until if self.live_until is not None else t1
        return self.live_since <= t1 and until >= t0


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def strata_bin() -> Path:
    path = strata_binary()
    if not path.is_file():
        pytest.fail(f"strata binary not found at {path}: run `cargo build` first "
                    "(scripts/test.sh does) or set STRATA_BIN", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kcat_bin() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed (apt-get install kcat; scripts/test.sh does)",
                    pytrace=False)
    return path


class BrokerFactory:
    def __init__(self, binary: Path, base: Path):
        self.binary = binary
        self.base = base
        self.brokers: list[Broker] = []

    def __call__(self, name: str = "broker", start: bool = True, **kwargs) -> Broker:
        workdir = self.base / f"{name}-{len(self.brokers)}"
        workdir.mkdir(parents=True)
        b = Broker(self.binary, workdir, name=name, **kwargs)
        self.brokers.append(b)
        if start:
            b.start()
        return b

    def close(self) -> None:
        """Stop every broker still running; a broker that does not exit cleanly fails the test."""
        errors = []
        for b in self.brokers:
            if b.alive():
                try:
                    b.stop()
                except BrokerError as e:
                    errors.append(str(e))
        if errors:
            raise BrokerError("\n\n".join(errors))


@pytest.fixture
def broker_factory(strata_bin, tmp_path):
    factory = BrokerFactory(strata_bin, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A fresh broker for one test."""
    return broker_factory("broker")


@pytest.fixture(scope="module")
def module_broker(strata_bin, tmp_path_factory, request):
    """One broker shared by the tests of a module (each test uses its own topics)."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    factory = BrokerFactory(strata_bin, tmp_path_factory.mktemp(name))
    broker = factory(name)
    yield broker
    factory.close()


# ---- failure reports --------------------------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    item.stash[_T0] = time.time()
    yield


_T0 = pytest.StashKey[float]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    t0 = item.stash.get(_T0, 0.0)
    now = time.time()
    for b in Broker.registry:
        if b.was_live_between(t0, now):
            report.sections.append((f"strata log: {b.name} ({b.bootstrap})", b.log_tail()))
