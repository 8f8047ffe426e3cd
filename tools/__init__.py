"""Local orchestration: start and stop the real services (emulator, receiver, Prometheus peers)."""
