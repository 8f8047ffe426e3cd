"""The remote-write receiver: validates Prometheus remote_write requests and publishes them to Pub/Sub."""
