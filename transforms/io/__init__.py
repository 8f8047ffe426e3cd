"""I/O edges shared by the pipeline, the Beam wrappers and the tools (not pure: they talk to services)."""
