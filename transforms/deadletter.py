"""The dead-letter record: what the archive and the sinks could not deliver, whole and replayable."""

from __future__ import annotations

import base64
import json
from typing import Any


def dead_letter_record(message: Any, error: str) -> str:
    """A whole message, its attributes and the error, as one JSON line (replayable)."""
    return json.dumps({
        "error": error,
        "message_id": getattr(message, "message_id", None),
        "publish_time": str(getattr(message, "publish_time", "") or ""),
        "attributes": dict(message.attributes or {}),
        "data_base64": base64.b64encode(message.data or b"").decode(),
    }, sort_keys=True)
