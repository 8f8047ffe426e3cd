"""The remote-write wire format: the compiled decoder/encoder (_wire*.c), limits, columnar batches, protobuf."""
