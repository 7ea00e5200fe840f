"""A local single-node Apache Kafka (KRaft) from Maven jars: fetch the jars, start, stop, status.

Rules of this module:

* Jars come from ``deploy/kafka/pom.xml`` (one profile per supported Kafka version) through
  ``mvn ... copy-dependencies`` into ``.kafka/jars-<version>``, once. They are copied into a
  temporary directory that is renamed when complete and carries a marker file, so a directory
  without the marker is never used.
* A broker lives in a data dir: ``server.properties``, ``kraft/`` (the log dirs), ``broker.log``
  (the JVM's stdout and stderr), ``broker.pid`` while it runs, and ``broker.json`` (pid, ports,
  bootstrap, version, paths) that outlives it, so a restart keeps the topics and the version.
* The broker runs in its own session and is stopped by pid only, and only after
  ``/proc/<pid>/cmdline`` shows the ``kafka.Kafka`` process of that data dir.
* Ready means a metadata request answers, not that a port is open.
* Everything that goes wrong raises :class:`BrokerError`, with the log tail when there is one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kafka"
CACHE = ROOT / ".kafka"
DEFAULT_VERSION = "3.9.2"
DEFAULT_HEAP = "512m"
NODE_ID = 1
MAIN_CLASS = "kafka.Kafka"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MARKER = ".complete"
LOG, PID, STATE = "broker.log", "broker.pid", "broker.json"
JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")
# How the JVM compiles the broker. "quick" stops at the C1 compiler: no C2 compile bursts while
# tests and the quick-start run, but each request then costs about 40% more broker CPU. "full" is
# the JVM's normal tiered compilation, as production brokers run: cheaper once warm, but its
# first minutes burn CPU compiling (the benchmarks measured worse with it).
JIT_FLAGS = {"quick": ("-XX:TieredStopAtLevel=1",), "full": ()}
DEFAULT_JIT = "quick"
_HEAP = re.compile(r"^(\d+)([kmg])$", re.IGNORECASE)
_UNIT = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

# Children started by this process, kept so that they are reaped (no zombie, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerError(Exception):
    """The local broker could not be fetched, started, reached or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class BrokerInfo:
    """A broker started by this module, as recorded in ``<data dir>/broker.json``."""

    pid: int
    port: int
    controller_port: int
    version: str
    data_dir: str
    log_path: str
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bootstrap": self.bootstrap}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BrokerInfo:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


# -- jars -------------------------------------------------------------------------------------


def supported_versions() -> list[str]:
    """The Kafka versions ``deploy/kafka/pom.xml`` has a profile for (``kafka-<version>``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    try:
        ids = ET.parse(DEPLOY / "pom.xml").getroot().findall("m:profiles/m:profile/m:id", ns)
    except (OSError, ET.ParseError):
        return []
    return [i.text.removeprefix("kafka-") for i in ids if i.text and i.text.startswith("kafka-")]


def jar_dir(version: str, cache_dir: Path = CACHE) -> Path:
    return cache_dir / f"jars-{version}"


def jars_cached(version: str, cache_dir: Path = CACHE) -> bool:
    return (jar_dir(version, cache_dir) / MARKER).is_file()


def ensure_jars(version: str, cache_dir: Path = CACHE) -> Path:
    """The directory with every jar of Kafka ``version``; runs Maven only if it is incomplete."""
    target = jar_dir(version, cache_dir)
    if jars_cached(version, cache_dir):
        return target
    if version not in supported_versions():
        raise BrokerError(
            f"Kafka {version} is not supported; supported: {', '.join(supported_versions())} "
            f"(add a profile to {DEPLOY / 'pom.xml'} for another version)"
        )
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn not found on PATH: Maven is needed once to fetch the Kafka jars")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f"jars-{version}.lock"):
        if jars_cached(version, cache_dir):
            return target
        partial = cache_dir / f".jars-{version}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            mvn, "-B", "-q", "-f", str(DEPLOY / "pom.xml"), f"-Pkafka-{version}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={partial}",
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        jars = sorted(p.name for p in partial.glob("*.jar"))
        if done.returncode != 0 or not any(j.startswith(f"kafka_2.13-{version}") for j in jars):
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise BrokerError(
                f"fetching the Kafka {version} jars failed: {' '.join(command)}\n{output}"
            )
        (partial / MARKER).write_text("\n".join(jars) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
    return target


# -- start ------------------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A Kafka-style cluster id: a random UUID in unpadded base64url, never starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (another process may take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True if a server may listen on ``port`` of 127.0.0.1 now. Like Kafka's own listener, the
    check sets SO_REUSEADDR: connections a stopped broker closed (TIME_WAIT, for a minute) do not
    keep its port, a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start(
    data_dir: Path,
    *,
    port: int | None = None,
    controller_port: int | None = None,
    version: str = DEFAULT_VERSION,
    heap: str = DEFAULT_HEAP,
    jit: str = DEFAULT_JIT,
    timeout: float = 90.0,
    extra_config: Mapping[str, str] | None = None,
    format_args: Sequence[str] = (),
) -> BrokerInfo:
    """Start a broker in ``data_dir`` and wait until it answers a metadata request and has a
    group coordinator (see :func:`reachable`).

    Ports not given are those of the data dir's last start (its clients' bootstrap address stays
    true; an error if that port is taken now, a free controller port instead), or free ones for
    a new data dir. If a broker of this data dir already runs, it is returned as it is (an error
    if it differs in version or in an explicitly requested port).
    ``extra_config`` adds server properties or replaces the template's (more listeners, for
    SASL and SSL; the PLAINTEXT listener on ``port`` must stay: readiness is checked there).
    ``format_args`` go to the storage format of a new data dir (``--add-scram ...`` users).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _locked(data_dir / "broker.lock"):
        current = running(data_dir)
        if current is not None:
            _check_same(current, port, version)
            return current
        previous = _read_state(data_dir)
        formatted = (data_dir / "kraft" / "meta.properties").is_file()
        if formatted and previous is not None and previous.version != version:
            raise BrokerError(
                f"{data_dir} holds data of Kafka {previous.version}, not {version}: "
                "use another --data-dir, or delete this one"
            )
        options = jvm_options(version, heap, jit)
        jars = ensure_jars(version)
        java = _java()
        if previous is not None:  # back on its ports, if it can be
            port = previous.port if port is None else port
            if controller_port is None and port_is_free(previous.controller_port):
                controller_port = previous.controller_port
        port = _port(port, "port")
        controller_port = _port(controller_port, "controller port", avoid=port)
        config = _write_config(data_dir, port, controller_port, extra_config or {})
        cluster_id = previous.cluster_id if formatted and previous else new_cluster_id()
        if not formatted:
            _format(java, jars, config, cluster_id, data_dir, format_args)
        proc = _launch(java, jars, config, options)
        log = str(data_dir / LOG)
        info = BrokerInfo(proc.pid, port, controller_port, version, str(data_dir), log, cluster_id)
        _write_state(data_dir, info)
        try:
            _wait_ready(proc, info, timeout)
        except BaseException:  # not ready, or interrupted: leave no half-started broker behind
            stop(data_dir, timeout=5)
            raise
        return info


def _check_same(current: BrokerInfo, port: int | None, version: str) -> None:
    if current.version != version:
        raise BrokerError(
            f"a Kafka {current.version} broker already runs in {current.data_dir} "
            f"(pid {current.pid}); stop it before starting Kafka {version}"
        )
    if port not in (None, 0, current.port):
        raise BrokerError(
            f"the broker of {current.data_dir} already runs on port {current.port}, not {port} "
            f"(pid {current.pid}); stop it first to change the port"
        )


def _port(port: int | None, what: str, avoid: int | None = None) -> int:
    if not port:
        while (picked := free_port()) == avoid:
            pass
        return picked
    if not port_is_free(port):
        raise BrokerError(f"{what} {port} on 127.0.0.1 is in use: choose another, or 0 for any")
    return port


def _java() -> Path:
    home = os.environ.get("JAVA_HOME")
    found = Path(home) / "bin" / "java" if home else shutil.which("java")
    if found is None or not Path(found).is_file():
        raise BrokerError("java not found (JAVA_HOME or PATH): Kafka needs a Java 17+ runtime")
    return Path(found)


def _write_config(
    data_dir: Path, port: int, controller_port: int, extra: Mapping[str, str]
) -> Path:
    template = Template((DEPLOY / "server.properties.template").read_text())
    text = template.substitute(
        PORT=port, CONTROLLER_PORT=controller_port, LOG_DIR=data_dir / "kraft"
    )
    if extra:
        kept = [line for line in text.splitlines() if line.partition("=")[0] not in extra]
        text = "\n".join([*kept, *(f"{key}={value}" for key, value in extra.items())]) + "\n"
    config = data_dir / "server.properties"
    config.write_text(text)
    return config


def _format(
    java: Path, jars: Path, config: Path, cluster_id: str, data_dir: Path, extra: Sequence[str]
) -> None:
    command = [
        str(java), "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{jars}/*",
        "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config),
        *extra,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-3000:]
        raise BrokerError(f"formatting {data_dir / 'kraft'} failed:\n{output}")


def jvm_options(version: str, heap: str, jit: str = DEFAULT_JIT) -> list[str]:
    """The JVM flags of the broker: a small heap, the compilation mode (``JIT_FLAGS``), the
    logging config of the version's line."""
    if jit not in JIT_FLAGS:
        raise BrokerError(f"jit {jit!r} is not one of {', '.join(JIT_FLAGS)}")
    match = _HEAP.match(heap)
    if match is None:
        raise BrokerError(f"heap {heap!r} is not a JVM size like 512m or 1g")
    initial = min(int(match[1]) * _UNIT[match[2].lower()], 128 << 20)
    if version.startswith("3."):
        logging = f"-Dlog4j.configuration=file:{DEPLOY / 'log4j.properties'}"
    else:
        logging = f"-Dlog4j2.configurationFile={DEPLOY / 'log4j2.properties'}"
    return [f"-Xms{initial >> 10}k", f"-Xmx{heap}", *JVM_FLAGS, *JIT_FLAGS[jit], logging]


def _launch(java: Path, jars: Path, config: Path, options: list[str]) -> subprocess.Popen[bytes]:
    data_dir = config.parent
    command = [str(java), *options, "-cp", f"{jars}/*", MAIN_CLASS, str(config)]
    with (data_dir / LOG).open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=data_dir, start_new_session=True,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    (data_dir / PID).write_text(f"{proc.pid}\n")
    return proc


def _wait_ready(proc: subprocess.Popen[bytes], info: BrokerInfo, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            _CHILDREN.pop(proc.pid, None)
            raise BrokerError(
                f"Kafka {info.version} exited with code {code} while starting; "
                f"{info.log_path} ends with:\n{log_tail(Path(info.log_path))}"
            )
        if reachable(info.bootstrap, groups=True):
            return
        time.sleep(0.25)
    raise BrokerError(
        f"Kafka {info.version} did not answer on {info.bootstrap} within {timeout:.0f} s; "
        f"{info.log_path} ends with:\n{log_tail(Path(info.log_path))}"
    )


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


# the consumer group a starting broker is asked about (it need not exist)
PROBE_GROUP = "trackerflow-broker-probe"


def reachable(bootstrap: str, timeout_ms: int = 3000, *, groups: bool = False) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request (and lists a broker); with
    ``groups``, also whether its group coordinator answers. A new broker creates the topic of
    its groups' offsets (``__consumer_offsets``) on the first request for a coordinator, and
    answers "not available" until it has: a consumer joining a group then logs an error (and
    tries again), so a broker the launcher starts is ready only once it has one."""
    from kafka import KafkaAdminClient  # kafka-python loads in ~0.1 s: only when probing
    from kafka.errors import KafkaError

    addresses = [a.strip().rpartition(":") for a in bootstrap.split(",")]
    if not any(p.isdigit() and _port_open(int(p), h.strip("[]")) for h, _, p in addresses):
        return False  # also spares kafka-python 3.0's client, which leaks if bootstrap fails
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="trackerflow-broker-probe",
            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms,
        )  # fmt: skip
    except (KafkaError, OSError):
        return False
    try:
        cluster = admin.describe_cluster()
        if groups and cluster.get("brokers"):
            admin.describe_groups([PROBE_GROUP])  # raises until the coordinator is there
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()
    return bool(cluster.get("brokers"))


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


# -- stop and status --------------------------------------------------------------------------


def running(data_dir: Path) -> BrokerInfo | None:
    """The broker of ``data_dir`` if its process is alive (and is that data dir's kafka.Kafka)."""
    data_dir = data_dir.resolve()
    info = _read_state(data_dir)
    pid = _read_pid(data_dir)
    if info is None or pid is None or pid != info.pid:
        return None
    return info if _is_our_broker(pid, data_dir) else None


def stop(data_dir: Path, timeout: float = 15.0) -> BrokerInfo | None:
    """Stop the broker of ``data_dir``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    Returns the broker that was stopped, or None if none was running (a stale pid file of a
    broker that died is removed).
    """
    data_dir = data_dir.resolve()
    info = running(data_dir)
    if info is None:
        (data_dir / PID).unlink(missing_ok=True)
        return None
    _signal(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(info.pid):
        _signal(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.05)
    _CHILDREN.pop(info.pid, None)
    (data_dir / PID).unlink(missing_ok=True)
    return info


def status(data_dir: Path) -> dict[str, Any] | None:
    """What is known of the broker of ``data_dir``: None if none was ever started there.

    Otherwise the recorded state (pid, ports, bootstrap, version, paths) plus ``running`` (its
    process is alive) and ``reachable`` (it answers a metadata request).
    """
    data_dir = data_dir.resolve()
    info = _read_state(data_dir)
    if info is None:
        return None
    alive = running(data_dir) is not None
    return {**info.to_dict(), "running": alive, "reachable": alive and reachable(info.bootstrap)}


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _is_our_broker(pid: int, data_dir: Path) -> bool:
    if not _alive(pid):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MAIN_CLASS.encode() in args and str(data_dir / "server.properties").encode() in args


# -- files ------------------------------------------------------------------------------------


def _read_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / PID).read_text().strip())
    except (OSError, ValueError):
        return None


def _read_state(data_dir: Path) -> BrokerInfo | None:
    try:
        return BrokerInfo.from_dict(json.loads((data_dir / STATE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(data_dir: Path, info: BrokerInfo) -> None:
    partial = data_dir / f"{STATE}.partial"
    partial.write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    partial.replace(data_dir / STATE)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
