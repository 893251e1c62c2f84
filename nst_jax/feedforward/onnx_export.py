"""A model folder exported as one ONNX file, for onnxruntime, TensorRT or any ONNX runtime in
a pipeline without JAX (``nst-jax models export MODEL -o model.onnx``).

Every network is written from its params as standard ONNX operators (opset 17), layer by
layer (:mod:`.onnx_layers`), not traced: the file has named weights and reads like the
network. This needs only the ``onnx`` package nst_jax's import already uses; tracing tools
(``jax2onnx`` 0.17 pulls equinox, huggingface-hub, netron and orbax-export and pins
orbax-checkpoint below 0.11.37) would add more than they save for four fixed networks.

Inputs and outputs are float32 NCHW images in [0, 1], the batch ``N`` dynamic (or fixed
with ``batch``), any ``H`` and ``W`` of at least 5 pixels (ONNX's reflection padding
reflects once, and the 9x9 convolutions pad by 4): as :func:`.model.apply_model` does, the
graph reflects the images up to the network's multiple (4, AdaIN 8) and crops back.

- johnson: ``image`` -> ``stylized``.
- adain: ``image``, ``style`` (one style image, ``(1, 3, h, w)``) and ``alpha`` (``(1,)``)
  -> ``stylized``; the VGG19 encoder (caffe preprocessing, up to ``block4_conv1``) inside.
- magenta26: ``image``, ``style_weights`` (``(styles,)``, summing to 1) -> ``stylized``.
- arbitrary: ``image`` and ``style`` (``(1, 3, 256, 256)``: the style image's centred square
  resized, as :func:`.pretrained.centre_square` makes it) -> ``stylized``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nst_jax.core.fields import as_count
from nst_jax.errors import InputError, shown
from nst_jax.feedforward import onnx_layers as layers
from nst_jax.files.atomic import atomic_write, check_writable
from nst_jax.files.onnx_tensors import require_onnx

BGR_MEAN = (103.939, 116.779, 123.68)  # Keras' caffe preprocessing (nst_jax.core.vgg)


def _johnson(g: layers.GraphBuilder, x: str, p: dict) -> str:
    """Johnson et al.'s network (:mod:`.johnson`) on ``x``, sides multiples of 4."""

    def layer(x, k, stride=1, up=False, relu=True):
        x = layers.upsample(g, x) if up else x
        x = layers.conv(g, x, p[f"ReflectConv_{k}"]["Conv_0"], f"ReflectConv_{k}", stride)
        norm = p[f"InstanceNorm_{k}"]
        x = layers.instance_norm(g, x, norm["scale"], norm["bias"], f"InstanceNorm_{k}")
        return g.op("Relu", x) if relu else x

    x = layer(layer(layer(x, 0), 1, 2), 2, 2)
    blocks = sorted(k for k in p if k.startswith("ResidualBlock_"))
    for name in blocks:
        b, y = p[name], x
        for j in range(2):
            y = layers.conv(g, y, b[f"ReflectConv_{j}"]["Conv_0"], f"{name}/ReflectConv_{j}")
            norm = b[f"InstanceNorm_{j}"]
            y = layers.instance_norm(g, y, norm["scale"], norm["bias"], f"{name}/InstanceNorm_{j}")
            y = g.op("Relu", y) if j == 0 else y
        x = g.op("Add", x, y)
    x = layer(layer(x, 3, up=True), 4, up=True)
    return g.op("Sigmoid", layers.conv(g, x, p["ReflectConv_5"]["Conv_0"], "ReflectConv_5"))


def _magenta(g: layers.GraphBuilder, x: str, condition: str, settings, p: dict) -> str:
    """Magenta's transformer (:mod:`.magenta`) conditioned by ``condition`` ``(1, D)``."""

    def layer(x, name, stride=1, up=False, relu=True):
        x = layers.upsample(g, x) if up else x
        x = layers.conv(g, x, p[name]["Conv_0"], name, stride)
        if f"{name}_norm" in p:
            x = layers.conditional_norm(g, x, condition, p[f"{name}_norm"], f"{name}_norm")
        return g.op("Relu", x) if relu else x

    x = layer(layer(layer(x, "contract0"), "contract1", 2), "contract2", 2)
    for k in range(settings.residual_blocks):
        b, y = p[f"residual{k}"], x
        for j in range(2):
            name = f"residual{k}/conv{j}"
            y = layers.conv(g, y, b[f"conv{j}"]["Conv_0"], name)
            y = layers.conditional_norm(g, y, condition, b[f"norm{j}"], f"residual{k}/norm{j}")
            y = g.op("Relu", y) if j == 0 else y
        x = g.op("Add", x, y)
    x = layer(layer(x, "expand0", up=True), "expand1", up=True)
    return g.op("Sigmoid", layer(x, "output", relu=False))


def _predictor(g: layers.GraphBuilder, x: str, p: dict) -> str:
    """MobileNetV2's style vector (:mod:`.mobilenet`) of ``x``, as ``(1, D)``."""
    from nst_jax.feedforward.mobilenet import BLOCKS

    def relu6(y):
        return g.op("Clip", y, g.const(0.0), g.const(6.0))

    x = relu6(layers.conv(g, x, p["Conv"], "Conv", 2, "same"))
    block, channels = 0, np.asarray(p["Conv"]["kernel"]).shape[-1]
    for expansion, features, repeats, first in BLOCKS:
        for i in range(repeats):
            name, stride = "expanded_conv" + (f"_{block}" if block else ""), first if i == 0 else 1
            b, y = p[name], x
            if expansion != 1:
                y = relu6(layers.conv(g, y, b["expand"], f"{name}/expand"))
            wide = np.asarray(b["depthwise"]["kernel"]).shape[-1]  # one group a channel
            y = relu6(layers.conv(g, y, b["depthwise"], f"{name}/depthwise", stride, "same", wide))
            y = layers.conv(g, y, b["project"], f"{name}/project")
            x = g.op("Add", x, y) if stride == 1 and channels == features else y
            block, channels = block + 1, features
    x = relu6(layers.conv(g, x, p["Conv_1"], "Conv_1"))
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)
    kernel = g.const(p["bottleneck"]["kernel"], "bottleneck/kernel")
    bias = g.const(p["bottleneck"]["bias"], "bottleneck/bias")
    return g.op("Add", g.op("MatMul", pooled, kernel), bias)


def _vgg_encoder(g: layers.GraphBuilder, x: str, vgg: dict) -> str:
    """VGG19 to ``block4_conv1`` (after its ReLU) of RGB ``x`` in [0, 1], with Keras' caffe
    preprocessing (x 255, RGB -> BGR, minus the BGR mean)."""
    bgr = g.op("Gather", x, g.const([2, 1, 0], dtype=np.int64), axis=1)
    mean = g.const(np.reshape(BGR_MEAN, (1, 3, 1, 1)))
    x = g.op("Sub", g.op("Mul", bgr, g.const(255.0)), mean)
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 1)):
        for k in range(1, convs + 1):
            name = f"block{block}_conv{k}"
            x = g.op("Relu", layers.conv(g, x, vgg[name], f"vgg/{name}", pad="zeros"))
        if block < 4:
            x = g.op("MaxPool", x, kernel_shape=[2, 2], strides=[2, 2])
    return x


def _adain(g: layers.GraphBuilder, x: str, style: str, alpha: str, p: dict, vgg: dict) -> str:
    """AdaIN (:mod:`.adain`): the content's encoder features given the style's statistics,
    mixed with their own by ``alpha``, decoded and clipped to [0, 1]."""
    from nst_jax.feedforward.adain import DECODER

    content = _vgg_encoder(g, x, vgg)
    styled, _ = layers.padded_to(g, style, 8)
    c_mean, c_std = layers.mean_std(g, content)
    s_mean, s_std = layers.mean_std(g, _vgg_encoder(g, styled, vgg))
    normed = g.op("Div", g.op("Sub", content, c_mean), c_std)
    target = g.op("Add", g.op("Mul", normed, s_std), s_mean)
    keep = g.op("Sub", g.const([1.0]), alpha)
    y = g.op("Add", g.op("Mul", target, alpha), g.op("Mul", content, keep))
    for k, (_, up) in enumerate(DECODER):
        y = layers.upsample(g, y) if up else y
        y = g.op("Relu", layers.conv(g, y, p[f"ReflectConv_{k}"]["Conv_0"], f"ReflectConv_{k}"))
    last = len(DECODER)
    y = layers.conv(g, y, p[f"ReflectConv_{last}"]["Conv_0"], f"ReflectConv_{last}")
    return g.op("Clip", y, g.const(0.0), g.const(1.0))


def export_model(
    folder: str | os.PathLike,
    output: str | os.PathLike,
    vgg_params: Any = None,
    batch: int | None = None,
    force: bool = False,
    reads: tuple = (),
) -> Path:
    """Write the model in ``folder`` as one ONNX file (module docstring).

    Args:
      folder: a model folder (trained or imported).
      output: the ``.onnx`` file to write (refused if it exists, unless ``force``).
      vgg_params: AdaIN: the VGG19 params it was trained with (the encoder goes in the file).
      batch: a fixed batch size; ``None``: dynamic.
      force: replace ``output`` (never the model's own files, nor ``reads``).
      reads: other inputs ``output`` must not be (the VGG19 weights file).

    Returns:
      ``output``.

    Raises:
      InputError: not a model, an existing output, or an AdaIN model without its VGG19.
      ValueError: ``batch`` is not a positive integer.
    """
    from nst_jax.feedforward.model import load_model

    batch = as_count("batch", batch, optional=True)
    require_onnx()
    output = check_output(output, folder, force, reads)
    model = load_model(folder)
    method = model.settings.method
    if method == "adain" and vgg_params is None:
        raise InputError(f"{shown(folder)}: an adain model's file holds its VGG19 encoder: "
                         "give the weights it was trained with")  # fmt: skip
    proto = _graph(model, method, vgg_params, batch or "N")
    atomic_write(output, lambda tmp: tmp.write_bytes(proto.SerializeToString()))
    return output


def check_output(
    output: str | os.PathLike, folder: str | os.PathLike, force: bool, reads: tuple = ()
) -> Path:
    """``output`` as the export of the model in ``folder``, checked before any work.

    Raises:
      TypeError: ``folder``, ``force`` or ``reads`` of the wrong type.
      InputError: a folder, a device or a pipe, an existing file without ``force``, an input
        (the model's files, ``reads``), or a place that cannot be written (one line).
    """
    from nst_jax.feedforward.model import PARAMS_FILE, RECORD_FILE, check_not_inputs

    if not isinstance(output, (str, os.PathLike)) or not str(output):
        raise InputError(f"-o: the .onnx file's path is needed, got {output!r}")
    if not isinstance(folder, (str, os.PathLike)) or not str(folder):
        raise TypeError(f"folder must be a model folder's path, got {folder!r}")
    if not isinstance(force, bool):
        raise TypeError(f"force must be True or False, got {force!r}")
    if isinstance(reads, (str, os.PathLike)) or not all(
        isinstance(read, (str, os.PathLike)) for read in reads
    ):
        raise TypeError(f"reads must be a sequence of paths, got {reads!r}")
    output = Path(output)
    check_writable(output, "the .onnx file")
    check_not_inputs([output], [Path(folder) / RECORD_FILE, Path(folder) / PARAMS_FILE, *reads])
    if os.path.lexists(output) and not force:  # a link to nothing is there too
        raise InputError(f"{shown(output)}: exists (--force replaces it)")
    return output


def _graph(model, method: str, vgg_params: Any, batch):
    """The ``onnx.ModelProto`` of ``model``."""
    g = layers.GraphBuilder()
    inputs = [layers.tensor_input("image", [batch, 3, "H", "W"])]
    x, size = layers.padded_to(g, "image", 8 if method == "adain" else 4)
    if method == "johnson":
        y = _johnson(g, x, model.params["params"])
    elif method == "adain":
        vgg = {k: {n: np.asarray(v) for n, v in leaves.items()} for k, leaves in vgg_params.items()}
        inputs += [layers.tensor_input("style", [1, 3, "h", "w"])]
        inputs += [layers.tensor_input("alpha", [1])]
        y = _adain(g, x, "style", "alpha", model.params["params"], vgg)
    elif method == "magenta26":
        count = model.settings.condition
        inputs.append(layers.tensor_input("style_weights", [count]))
        condition = g.op("Unsqueeze", "style_weights", g.const([0], dtype=np.int64))
        y = _magenta(g, x, condition, model.settings, model.params["transformer"]["params"])
    else:
        inputs.append(layers.tensor_input("style", [1, 3, 256, 256]))
        vector = _predictor(g, "style", model.params["predictor"]["params"])
        y = _magenta(g, x, vector, model.settings, model.params["transformer"]["params"])
    g.nodes.append(g.helper.make_node("Identity", [layers.cropped(g, y, size)], ["stylized"]))
    outputs = [layers.tensor_input("stylized", [batch, 3, "H", "W"])]
    return g.model(inputs, outputs, f"nst_jax {method}")
