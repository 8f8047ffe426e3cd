"""Remote-write sinks: config, auth specs, relabel rules, batching, request building, forwarding."""
