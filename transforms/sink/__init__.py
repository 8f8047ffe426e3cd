"""Remote-write sinks: config, relabel rules, batching, request building, HTTP service, forwarding."""
