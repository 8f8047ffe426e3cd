"""gunicorn embedding: the app is built in each worker, after fork (gthread workers: a read is CPU and disk
work on a small request, so slow-sender buffering as in the receiver's worker is not needed)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from reader.config import ReaderConfig


def _child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class ReaderServer(BaseApplication):
    def __init__(self, config: ReaderConfig) -> None:
        self.reader_config = config
        super().__init__()

    def load_config(self) -> None:
        c = self.reader_config
        settings: dict[str, Any] = {
            "bind": f"{c.host}:{c.port}", "workers": c.workers, "threads": c.threads, "worker_class": "gthread",
            "timeout": c.timeout, "graceful_timeout": 10, "keepalive": 75, "child_exit": _child_exit,
            "control_socket_disable": True, "accesslog": None, "loglevel": "info",
        }
        if c.tls_cert_file:
            settings.update(certfile=c.tls_cert_file, keyfile=c.tls_key_file)
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from reader.app import create_app

        return create_app(self.reader_config)


def serve(config: ReaderConfig) -> None:
    ReaderServer(config).run()
