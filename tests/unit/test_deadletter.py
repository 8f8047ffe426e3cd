"""The one dead-letter schema: archive and sink records round-trip, and keep their exact JSON keys."""

from __future__ import annotations

import json
from types import SimpleNamespace

from transforms.core.deadletter import DeadLetter


def test_an_archive_record_has_the_common_fields_only_and_round_trips() -> None:
    message = SimpleNamespace(data=b"\xff\x00body", attributes={"protocol": "1.0", "tenant": "t"},
                              message_id="42", publish_time="2026-11-30 12:00:00")
    line = DeadLetter.of_message(message, "InvalidPayload: bad").to_json()
    assert sorted(json.loads(line)) == ["attributes", "data_base64", "error", "message_id", "publish_time"]
    back = DeadLetter.from_json(line)
    assert (back.data, dict(back.attributes), back.message_id, back.error, back.sink) == (
        b"\xff\x00body", {"protocol": "1.0", "tenant": "t"}, "42", "InvalidPayload: bad", None)


def test_a_sink_record_adds_where_it_was_refused() -> None:
    line = DeadLetter(error="sink vm: 400", data=b"x", attributes={"protocol": "1.0"}, sink="vm",
                      url="http://127.0.0.1:1/api/v1/write", status=400, answer="out of order").to_json()
    record = json.loads(line)
    assert {k: record[k] for k in ("sink", "url", "status", "answer", "message_id")} == {
        "sink": "vm", "url": "http://127.0.0.1:1/api/v1/write", "status": 400, "answer": "out of order",
        "message_id": None}
    assert DeadLetter.from_json(line).status == 400
