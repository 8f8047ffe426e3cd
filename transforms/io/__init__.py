"""The I/O edges of the core, one home each: Pub/Sub pulls, leases and acks (pubsub), atomic file
writes (files), the dead-letter store (deadletters), the HTTP sink service (http_sink). They may
import Beam's filesystems, requests and google.cloud; the pure core in transforms/ never imports them."""
