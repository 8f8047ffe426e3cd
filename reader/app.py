"""The Flask app factory: POST /api/v1/read, health, readiness and metrics (views in reader/views.py)."""

from __future__ import annotations

from flask import Flask

from reader import views
from reader.answer import Answerer
from reader.config import ReaderConfig
from reader.metrics import ReaderMetrics
from receiver.auth import Authenticator
from transforms.io.archive_read import ArchiveReader


def create_app(config: ReaderConfig, metrics: ReaderMetrics | None = None) -> Flask:
    app = Flask(__name__)
    answerer = Answerer(ArchiveReader(config.archive_path), config.max_samples_per_query,
                        config.max_bytes_per_response, metrics or ReaderMetrics())
    # the receiver's authenticator reads only the basic/bearer fields, which ReaderConfig shares
    auth = Authenticator(config)  # type: ignore[arg-type]
    app.extensions[views.EXTENSION] = views.ReaderState(answerer, auth, config.max_body_bytes)
    app.register_blueprint(views.blueprint)
    return app
