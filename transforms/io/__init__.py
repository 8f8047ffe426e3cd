"""The I/O edges of the core, one home each: Pub/Sub pulls, leases and acks (pubsub), atomic file
writes (files), the dead-letter store (deadletters), the HTTP sink service (http_sink), a sink's auth
applied to a request (sink_auth) and secret files (secrets). They may import Beam's filesystems,
requests and google.cloud; the pure core in transforms/core never imports them."""
