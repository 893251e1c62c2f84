"""Bytes on disk: images, weights (the official Keras HDF5 file and its Flax conversion),
atomic writes and the compilation cache. No JAX maths."""
