"""The Flask app factory: POST /api/v1/write, health, readiness and metrics (views in receiver/views.py).

The write path itself (negotiate, validate, split, publish, wait) is receiver/ingest.py, free of Flask.
"""

from __future__ import annotations

from flask import Flask

from receiver import views
from receiver.auth import Authenticator
from receiver.config import ReceiverConfig
from receiver.ingest import Ingest
from receiver.metrics import ReceiverMetrics
from receiver.publisher import Publisher, PubSubPublisher


def create_app(
    config: ReceiverConfig,
    publisher: Publisher | None = None,
    metrics: ReceiverMetrics | None = None,
) -> Flask:
    app = Flask(__name__)
    publisher = publisher or PubSubPublisher(config.topic, config.max_outstanding_bytes,
                                             timeout=config.publish_timeout)
    ingest = Ingest(config, publisher, metrics or ReceiverMetrics())
    app.extensions[views.EXTENSION] = views.ReceiverState(ingest, Authenticator(config))
    app.register_blueprint(views.blueprint)
    return app
