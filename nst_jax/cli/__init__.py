"""The ``nst-jax`` program: parsing, progress, checkpoints, provenance and outputs. Nothing
outside this package imports it; everything it does is a library call."""
