"""The official weights file's format: legacy Keras HDF5, read by following its attributes.

Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` (and VGG16's) is read by
following its attributes, never by guessing dataset names: the root attribute
``layer_names`` (possibly split into ``layer_names0``, ``layer_names1``, ...) lists one group
per layer, and each group's ``weight_names`` lists its datasets in order (kernel, bias).
The official file names them ``block1_conv1_W_1:0``; newer Keras writes
``block1_conv1/kernel:0``.

Tests and benchmarks write files in the same layout, with random values
(:func:`random_params`), so the loading code they exercise is the one users run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import h5py
import numpy as np

from nst_jax.core.layers import BLOCKS, Blocks, conv_layers, conv_shapes, network_layers
from nst_jax.errors import WeightsError

NumpyParams = dict[str, dict[str, np.ndarray]]


def _h5_names(group: h5py.Group | h5py.AttributeManager, name: str) -> list[str]:
    """An attribute list as Keras stores it: whole, or split into ``name0``, ``name1``, ..."""
    attrs = group.attrs if isinstance(group, h5py.Group) else group
    if name in attrs:
        values = list(attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in attrs:
            values.extend(attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


@contextlib.contextmanager
def _open_h5(path: Path) -> Iterator[h5py.File]:
    """Open an HDF5 file for reading, turning h5py's errors into one-line ``WeightsError``s."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except OSError as e:
        if path.stat().st_size == 0:
            raise WeightsError(f"{path}: empty file") from None
        reason = str(e).split("(")[-1].rstrip(")") if "(" in str(e) else str(e)
        raise WeightsError(f"{path}: unreadable HDF5 file ({reason})") from None


def read_keras_h5(path: str | os.PathLike) -> NumpyParams:
    """Read the conv params of a VGG network from a Keras HDF5 weights file (official or
    newer naming): every listed layer named ``blockB_convC``.

    Args:
      path: the ``.h5`` file.

    Returns:
      ``{layer: {"kernel", "bias"}}`` NumPy arrays as stored, not yet validated
      (:func:`nst_jax.files.weights.validate` checks shapes and values).

    Raises:
      WeightsError: unreadable, truncated or non-HDF5 file, a listed layer without its group
        or with another number of weights than 2.
    """
    path = Path(path)
    with _open_h5(path) as f:
        # Whole-model saves nest the weights under "model_weights".
        root = f.get("model_weights", f)
        layer_names = _h5_names(root, "layer_names")
        if not layer_names:
            raise WeightsError(f"{path}: no 'layer_names' attribute; not a Keras weights file")
        raw = {}
        for layer in layer_names:
            if not _is_conv_name(layer):
                continue  # input and pooling layers carry no weights
            if layer not in root:
                raise WeightsError(f"{path}: layer {layer} is listed but has no group")
            weight_names = _h5_names(root[layer], "weight_names")
            if len(weight_names) != 2:
                raise WeightsError(
                    f"{path}: layer {layer} lists {len(weight_names)} weights, expected 2"
                )
            try:
                kernel, bias = (np.asarray(root[layer][name]) for name in weight_names)
            except (KeyError, OSError) as e:
                raise WeightsError(f"{path}: layer {layer} cannot be read ({e})") from None
            raw[layer] = {"kernel": kernel, "bias": bias}
    return raw


def _is_conv_name(layer: str) -> bool:
    block, _, conv = layer.partition("_")
    return (
        block[:5] == "block" and block[5:].isdigit() and conv[:4] == "conv" and conv[4:].isdigit()
    )


def write_keras_h5(
    params: Mapping, path: str | os.PathLike, naming: str = "official", blocks: Blocks = BLOCKS
) -> None:
    """Write params in the legacy Keras HDF5 layout, as the official file has it.

    For tests and benchmarks: ``scripts/make_test_weights.py`` uses it to build files that the
    real loading code reads.

    Args:
      params: ``{layer: {"kernel", "bias"}}``.
      path: where to write.
      naming: ``"official"`` (``block1_conv1_W_1:0``, datasets directly in the layer group) or
        ``"keras2"`` (``block1_conv1/kernel:0``, in a nested group, as newer Keras writes).
      blocks: the network (VGG19's by default; ``layers.VGG16_BLOCKS``).
    """
    if naming not in ("official", "keras2"):
        raise ValueError(f"naming must be 'official' or 'keras2', got {naming!r}")
    with h5py.File(path, "w") as f:
        # Fixed-length byte strings, as Keras' save_attributes_to_hdf5_group writes them.
        every = network_layers(blocks)
        f.attrs["layer_names"] = np.array([n.encode() for n in ("input_1",) + every], "S")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4" if naming == "official" else b"2.15.0"
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for layer in every:
            group = f.create_group(layer)
            if layer not in conv_layers(blocks):
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            if naming == "official":
                names = [f"{layer}_W_1:0", f"{layer}_b_1:0"]
            else:
                names = [f"{layer}/kernel:0", f"{layer}/bias:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], "S")
            for name, key in zip(names, ("kernel", "bias"), strict=True):
                group.create_dataset(name, data=np.asarray(params[layer][key], np.float32))


def random_params(seed: int = 0, blocks: Blocks = BLOCKS) -> dict[str, dict[str, np.ndarray]]:
    """Random VGG params (VGG19's by default) with He-normal kernels, for tests and
    benchmarks.

    He scaling keeps activations of a similar size through all 16 ReLU layers, so tests exercise
    realistic magnitudes instead of values that vanish or overflow.

    Returns:
      ``{layer: {"kernel": (3, 3, in, out), "bias": (out,)}}`` float32 NumPy arrays.
    """
    rng = np.random.default_rng(seed)
    params = {}
    for name, (kernel_shape, bias_shape) in conv_shapes(blocks).items():
        fan_in = kernel_shape[0] * kernel_shape[1] * kernel_shape[2]
        kernel = rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel_shape).astype(np.float32)
        bias = rng.normal(0.0, 0.1, bias_shape).astype(np.float32)
        params[name] = {"kernel": kernel, "bias": bias}
    return params
