"""The pure core shared by the receiver and the pipeline: codec, validation, protocol constants."""
