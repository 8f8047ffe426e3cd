"""The pure core: wire format, archive formats, sink and restore logic.

No I/O here, and no Beam, Flask, requests or google.cloud (tests/unit/test_layers.py)."""
