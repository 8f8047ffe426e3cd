"""The dead-letter record: one schema for what the archive and the sinks could not deliver.

A record is one JSON line holding a whole message (bytes, base64) with its attributes and the error, so
`python -m pipeline.replay` can publish it back byte for byte. Records from a sink add where it was
refused (sink, url, HTTP status, the sink's answer); archive records carry only the common fields.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

SINK_FIELDS = ("sink", "url", "status", "answer")


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    error: str
    data: bytes
    attributes: Mapping[str, str]
    message_id: str | None = None
    publish_time: str = ""
    # set on records from a sink only
    sink: str | None = None
    url: str | None = None
    status: int | None = None
    answer: str | None = None

    @classmethod
    def of_message(cls, message: Any, error: str) -> DeadLetter:
        """A Pub/Sub message (anything with data, attributes and optionally message_id/publish_time)."""
        return cls(error=error, data=message.data or b"", attributes=dict(message.attributes or {}),
                   message_id=getattr(message, "message_id", None),
                   publish_time=str(getattr(message, "publish_time", "") or ""))

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "error": self.error,
            "message_id": self.message_id,
            "publish_time": self.publish_time,
            "attributes": dict(self.attributes),
            "data_base64": base64.b64encode(self.data).decode(),
        }
        if self.sink is not None:
            record.update({name: getattr(self, name) for name in SINK_FIELDS})
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> DeadLetter:
        record = json.loads(line)
        return cls(error=record["error"], data=base64.b64decode(record["data_base64"]),
                   attributes=record["attributes"], message_id=record.get("message_id"),
                   publish_time=record.get("publish_time") or "",
                   **{name: record.get(name) for name in SINK_FIELDS})
