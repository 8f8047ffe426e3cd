"""Start the real services on 127.0.0.1 and stop exactly what was started, by PID.

Shared by the integration tests, the benchmarks and `make run`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
PUBSUB_EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
ROOT = Path(__file__).resolve().parents[1]


class ServiceError(RuntimeError):
    """A service is missing or did not come up; the message says what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")


def require_binary(name: str, install_hint: str) -> str:
    """A command from this venv (Python tools) or from PATH (Debian packages)."""
    venv_bin = Path(sys.executable).parent / name
    path = str(venv_bin) if venv_bin.exists() else shutil.which(name)
    if not path:
        raise ServiceError(f"{name} not found: {install_hint}")
    return path


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants, read from /proc (gunicorn's master and its workers)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Service:
    """A child process in its own session, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> Service:
        def ready() -> bool:
            if not self.alive():
                raise ServiceError(f"{self.name} exited with {self.process.returncode}; log:\n{self.log_tail()}")
            return check()

        try:
            wait_until(ready, timeout, f"{self.name} to be ready")
        except ServiceError:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        if self.alive():
            self.process.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL; the whole process group, as gunicorn and the JVM have children."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        with contextlib.suppress(ProcessLookupError):  # reap stragglers left in the group
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


def _http_ok(url: str, body: bytes | None = None) -> Callable[[], bool]:
    def check() -> bool:
        status, data = http_get(url)
        return status == 200 and (body is None or data.strip() == body)

    return check


def start_pubsub_emulator(log_dir: Path, port: int | None = None) -> tuple[Service, str]:
    """Google's Pub/Sub emulator (a JVM). Returns the service and its host:port."""
    if not PUBSUB_EMULATOR.exists():
        raise ServiceError(
            f"Pub/Sub emulator not found at {PUBSUB_EMULATOR}: install it with "
            "`gcloud components install pubsub-emulator` or the Debian/apt package "
            "google-cloud-cli-pubsub-emulator"
        )
    require_binary("java", "the Pub/Sub emulator needs Java 17: apt-get install openjdk-17-jre-headless")
    port = port or free_port()
    if port_in_use(port):
        raise ServiceError(f"port {port} for the Pub/Sub emulator is already in use")
    data_dir = tempfile.mkdtemp(prefix="pubsub-emulator-", dir=log_dir)
    service = Service("pubsub-emulator", [str(PUBSUB_EMULATOR), f"--host={LOOPBACK}", f"--port={port}",
                                          f"--dir={data_dir}"], log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/", b"Ok"), timeout=60)
    return service, f"{LOOPBACK}:{port}"


def create_topic_and_subscription(emulator_host: str, topic: str, subscription: str, ack_deadline: int = 60) -> None:
    """Create a topic and a pull subscription on the emulator."""
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    from google.cloud import pubsub_v1

    from transforms.io.pubsub import subscriber_client

    publisher = pubsub_v1.PublisherClient()
    subscriber = subscriber_client()
    try:
        publisher.create_topic(request={"name": topic})
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline})
    finally:
        subscriber.close()
        publisher.transport.close()


def create_subscription(emulator_host: str, topic: str, subscription: str, ack_deadline: int = 60) -> None:
    """Another pull subscription on an existing topic (a sink's own)."""
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    from transforms.io.pubsub import subscriber_client

    with subscriber_client() as subscriber:
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "ack_deadline_seconds": ack_deadline})


def start_receiver(log_dir: Path, emulator_host: str, topic: str, port: int | None = None,
                   args: Sequence[str] = (), name: str = "receiver",
                   env: dict[str, str] | None = None) -> tuple[Service, str]:
    """`python -m receiver` under gunicorn. Returns the service and its base URL."""
    port = port or free_port()
    if port_in_use(port):
        raise ServiceError(f"port {port} for the receiver is already in use")
    scheme = "https" if "--tls-cert-file" in args else "http"
    service = Service(name, [sys.executable, "-m", "receiver", "--host", LOOPBACK, "--port", str(port),
                             "--topic", topic, *args], log_dir,
                      env={"PUBSUB_EMULATOR_HOST": emulator_host, **(env or {})}, cwd=ROOT)
    url = f"{scheme}://{LOOPBACK}:{port}"
    if scheme == "http":
        service.wait_ready(_http_ok(f"{url}/-/healthy"), timeout=60)
    else:
        service.wait_ready(lambda: port_in_use(port), timeout=60)
    return service, url


def start_reader(log_dir: Path, archive_path: str, port: int | None = None, args: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> tuple[Service, str]:
    """`python -m reader` (remote_read over the archive) under gunicorn. Returns the service and its base URL."""
    port = port or free_port()
    if port_in_use(port):
        raise ServiceError(f"port {port} for the reader is already in use")
    scheme = "https" if "--tls-cert-file" in args else "http"
    service = Service("reader", [sys.executable, "-m", "reader", "--host", LOOPBACK, "--port", str(port),
                                 "--archive-path", archive_path, *args], log_dir, env=env, cwd=ROOT)
    url = f"{scheme}://{LOOPBACK}:{port}"
    if scheme == "http":
        service.wait_ready(_http_ok(f"{url}/-/healthy"), timeout=60)
    else:
        service.wait_ready(lambda: port_in_use(port), timeout=60)
    return service, url


def start_node_exporter(log_dir: Path, port: int | None = None) -> tuple[Service, str]:
    binary = require_binary("prometheus-node-exporter", "apt-get install prometheus-node-exporter")
    port = port or free_port()
    service = Service("node-exporter", [binary, f"--web.listen-address={LOOPBACK}:{port}"], log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/metrics"), timeout=30)
    return service, f"{LOOPBACK}:{port}"


def start_prometheus(log_dir: Path, config: str, *, receiver: bool = False, port: int | None = None,
                     name: str = "prometheus", args: Sequence[str] = (),
                     data_dir: Path | None = None) -> tuple[Service, str]:
    """Debian's Prometheus with the given YAML config, lifecycle API on (for /-/reload), plus `args`
    (e.g. --enable-feature=native-histograms). `data_dir`: an existing TSDB to open (default: a new one)."""
    binary = require_binary("prometheus", "apt-get install prometheus")
    port = port or free_port()
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=log_dir))
    (work / "prometheus.yml").write_text(config)
    argv = [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={data_dir or work / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}", "--web.enable-lifecycle"]
    if receiver:
        argv.append("--web.enable-remote-write-receiver")
    argv += args
    service = Service(name, argv, log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/-/ready"), timeout=60)
    return service, f"http://{LOOPBACK}:{port}"


def start_victoria_metrics(log_dir: Path, name: str = "victoria-metrics", port: int | None = None,
                           data_dir: str | None = None, args: Sequence[str] = ()) -> tuple[Service, str]:
    """VictoriaMetrics, plus `args` (e.g. -search.disableCache); pass the same port and data_dir again to
    restart it after an outage."""
    binary = require_binary("victoria-metrics", "apt-get install victoria-metrics")
    port = port or free_port()
    work = data_dir or tempfile.mkdtemp(prefix=f"{name}-", dir=log_dir)
    service = Service(name, [binary, f"-httpListenAddr={LOOPBACK}:{port}", f"-storageDataPath={work}", *args],
                      log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/health"), timeout=60)
    return service, f"http://{LOOPBACK}:{port}"


def start_vmagent(log_dir: Path, remote_write_url: str) -> tuple[Service, str]:
    binary = require_binary("vmagent", "apt-get install victoria-metrics")
    port = free_port()
    work = tempfile.mkdtemp(prefix="vmagent-", dir=log_dir)
    service = Service("vmagent", [binary, f"-httpListenAddr={LOOPBACK}:{port}", f"-remoteWrite.url={remote_write_url}",
                                  f"-remoteWrite.tmpDataPath={work}"], log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/health"), timeout=60)
    return service, f"http://{LOOPBACK}:{port}"


@contextlib.contextmanager
def stopping(*services: Service) -> Iterator[None]:
    try:
        yield
    finally:
        for service in reversed(services):
            service.stop()


def start_gcs_emulator(log_dir: Path) -> tuple[Service, str]:
    """gcp-storage-emulator (PyPI), in memory. Returns the service and its http:// URL for
    STORAGE_EMULATOR_HOST."""
    binary = require_binary("gcp-storage-emulator", "pip install gcp-storage-emulator (a test dependency)")
    port = free_port()
    service = Service("gcs-emulator", [binary, "start", "--host", LOOPBACK, "--port", str(port), "--in-memory"],
                      log_dir)
    service.wait_ready(lambda: port_in_use(port), timeout=30)
    return service, f"http://{LOOPBACK}:{port}"


def start_moto(log_dir: Path) -> tuple[Service, str]:
    """moto in server mode: a local S3. Returns the service and its endpoint URL."""
    binary = require_binary("moto_server", "pip install 'moto[server]' (a test dependency)")
    port = free_port()
    service = Service("moto", [binary, "-H", LOOPBACK, "-p", str(port)], log_dir)
    service.wait_ready(_http_ok(f"http://{LOOPBACK}:{port}/moto-api/"), timeout=30)
    return service, f"http://{LOOPBACK}:{port}"
