"""gunicorn embedding: the app is built in each worker, after fork, so each has its own Pub/Sub client.

The worker class is receiver.worker.BufferedWorker: requests are read whole by an event loop before a
thread runs the app, so slow senders cannot hold the threads."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from gunicorn.app.base import BaseApplication

from receiver.config import ReceiverConfig

Config = TypeVar("Config")


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class ReceiverServer(BaseApplication):
    def __init__(self, config: ReceiverConfig) -> None:
        self.receiver_config = config
        super().__init__()

    def load_config(self) -> None:
        c = self.receiver_config
        settings: dict[str, Any] = {
            "bind": f"{c.host}:{c.port}",
            "workers": c.workers,
            "threads": c.threads,
            "worker_class": "receiver.worker.BufferedWorker",
            # a request may wait publish_timeout for Pub/Sub; never let gunicorn kill it first
            "timeout": int(c.publish_timeout) + 30,
            "graceful_timeout": int(c.publish_timeout) + 5,
            "keepalive": 75,
            "child_exit": _child_exit,
            # several receivers may run on one host; the control socket path would collide
            "control_socket_disable": True,
            "accesslog": None,
            "loglevel": "info",
        }
        if c.tls_cert_file:
            settings.update(certfile=c.tls_cert_file, keyfile=c.tls_key_file)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from receiver.app import create_app

        return create_app(self.receiver_config)


def serve(config: ReceiverConfig) -> None:
    ReceiverServer(config).run()


def serve_with_shared_metrics(serve_config: Callable[[Config], None], config: Config, name: str) -> None:
    """Run a gunicorn service whose workers share prometheus_client's multiprocess directory.

    prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import time, so it is set before any worker
    imports metrics; a directory made here is removed when the service stops.
    """
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix=f"{name}-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        serve_config(config)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
