"""Read the weights of an ONNX file (``onnx``'s protobuf) as NumPy arrays: no graph is run,
no onnxruntime and no TensorFlow are needed.

The file is untrusted: it is read whole from its bytes (a tensor that points at external
data, another file, is refused), every initializer converted by ``onnx.numpy_helper``, and
quantised weights dequantised: an integer initializer that a ``DequantizeLinear`` node
reads becomes ``(q - zero_point) * scale`` (per tensor, or per channel along the node's
``axis``), in float32, under the integer tensor's own name. The ONNX operator reference
defines ``DequantizeLinear`` (https://onnx.ai/onnx/operators/onnx__DequantizeLinear.html).

Requires the ``onnx`` extra (``pip install "nst-jax[onnx]"``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from nst_jax.errors import InputError, shown

MAX_BYTES = 1 << 30  # the networks read here hold a few MB


def require_onnx():
    """The ``onnx`` package.

    Raises:
      InputError: not installed (one line with the command that installs it).
    """
    try:
        import onnx
    except ImportError:
        raise InputError("ONNX files need the onnx extra: pip install 'nst-jax[onnx]'") from None
    return onnx


def load_onnx(path: str | os.PathLike):
    """The ``onnx.ModelProto`` of ``path``, parsed from its bytes.

    Raises:
      InputError: unreadable, not ONNX or damaged, or the ``onnx`` package missing (one line).
    """
    onnx = require_onnx()
    from google.protobuf.message import DecodeError

    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{shown(path)}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise InputError(f"{shown(path)}: {info.st_size} bytes, more than a network here")
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot read ({e.strerror})") from None
    try:
        model = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise InputError(f"{shown(path)}: not an ONNX file, or a damaged one ({e})") from None
    if not model.graph.initializer:
        raise InputError(f"{shown(path)}: not an ONNX file with weights (no initializers)")
    return model


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every weight of the ONNX file ``path`` by name, quantised ones dequantised (module
    docstring).

    Raises:
      InputError: the file cannot be read, or a tensor is damaged (one line naming it).
    """
    path = Path(path)
    model = load_onnx(path)
    from onnx import numpy_helper

    tensors = {}
    for tensor in model.graph.initializer:
        if tensor.name in tensors:
            raise InputError(f"{shown(path)}: tensor {shown(tensor.name)} is there twice")
        if tensor.data_location == tensor.EXTERNAL or tensor.external_data:
            raise InputError(f"{shown(path)}: tensor {shown(tensor.name)} lives in another file")
        try:
            tensors[tensor.name] = numpy_helper.to_array(tensor)
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise InputError(f"{shown(path)}: damaged tensor {shown(tensor.name)} ({e})") from None
    raw = dict(tensors)  # a zero point may itself be dequantised elsewhere (tf2onnx shares)
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in raw:
            tensors[node.input[0]] = _dequantized(path, node, raw)
    return tensors


def _dequantized(path: Path, node, tensors: dict) -> np.ndarray:
    """``(q - zero_point) * scale`` of the node's first input, broadcast along ``axis``."""
    name = node.input[0]
    quantised = tensors[name]
    inputs = [tensors.get(i) for i in node.input[1:3]] + [None, None]
    scale = inputs[0]
    zero = inputs[1] if inputs[1] is not None else np.zeros(np.shape(scale), np.int32)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    fault = f"{shown(path)}: quantised tensor {shown(name)}"
    if scale is None or not np.issubdtype(quantised.dtype, np.integer):
        return quantised  # not a weight's dequantisation (an activation's, or a float input)
    if scale.shape != zero.shape or scale.ndim > 1:
        raise InputError(f"{fault} has a scale of shape {scale.shape}, zero point {zero.shape}")
    if not (np.issubdtype(scale.dtype, np.floating) and np.issubdtype(zero.dtype, np.integer)):
        raise InputError(f"{fault}: a {scale.dtype} scale and {zero.dtype} zero point")
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise InputError(f"{fault}: its scale is not positive and finite")
    if scale.ndim == 1:
        if not -quantised.ndim <= axis < quantised.ndim or quantised.shape[axis] != scale.size:
            raise InputError(f"{fault}: {scale.size} scales for shape {quantised.shape}")
        shape = [1] * quantised.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    values = (quantised.astype(np.float64) - zero.astype(np.float64)) * scale.astype(np.float64)
    with np.errstate(over="ignore"):  # an overflow is refused as non-finite by the import
        return values.astype(np.float32)
