"""An ONNX graph written layer by layer from a network's params: the building blocks of
:mod:`.onnx_export` (standard operators of opset 17, float32, NCHW).

Each helper takes the name of an ``(N, C, H, W)`` tensor and returns its result's name;
weights become initializers named after their place in the params tree, so the file reads
like the network. The operators' semantics are the ONNX reference's
(https://onnx.ai/onnx/operators/): ``InstanceNormalization`` is the biased variance with
``epsilon``; ``Resize`` with ``nearest``, ``asymmetric`` and ``floor`` repeats pixels.
"""

from __future__ import annotations

import numpy as np

OPSET = 17


class GraphBuilder:
    """Nodes and initializers of one graph, with names made unique."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.initializers, self.count, self.named = [], [], 0, set()

    def const(self, value, name: str | None = None, dtype=np.float32) -> str:
        """An initializer holding ``value``; its name. A named one is written once (a
        network applied twice, as AdaIN's encoder, shares its weights)."""
        self.count += 1
        name = name or f"const_{self.count}"
        if name not in self.named:
            array = np.asarray(value, dtype)
            self.initializers.append(self.numpy_helper.from_array(array, name))
            self.named.add(name)
        return name

    def op(self, op_type: str, *inputs: str, **attributes) -> str:
        """One node of ``op_type`` on ``inputs``; its output's name."""
        self.count += 1
        output = f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def model(self, inputs: list, outputs: list, name: str):
        """The ``onnx.ModelProto`` of the graph, checked by ``onnx.checker``."""
        import onnx

        graph = self.helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", OPSET)],
                                       producer_name="nst_jax")  # fmt: skip
        onnx.checker.check_model(model)
        return model


def tensor_input(name: str, shape: list):
    """A float32 graph input or output of ``shape`` (strings are named dynamic axes)."""
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv(g: GraphBuilder, x: str, params: dict, name: str, stride: int = 1, pad: str = "reflect",
         groups: int = 1) -> str:  # fmt: skip
    """A convolution of HWIO ``params["kernel"]`` plus ``bias``: reflection padding of
    ``k // 2`` (Johnson, AdaIN, Magenta), zeros of ``k // 2`` (VGG), or TensorFlow's SAME
    (``same``: the extra pixel at the bottom and right, MobileNet)."""
    kernel = np.asarray(params["kernel"], np.float32)
    size = kernel.shape[0]
    weight = g.const(kernel.transpose(3, 2, 0, 1), f"{name}/kernel")
    bias = g.const(params["bias"], f"{name}/bias")
    if pad == "reflect" and size > 1:
        amount = size // 2
        pads = g.const([0, 0, amount, amount, 0, 0, amount, amount], dtype=np.int64)
        x = g.op("Pad", x, pads, mode="reflect")
    extra = {"auto_pad": "SAME_UPPER"} if pad == "same" else {}
    if pad == "zeros":
        extra = {"pads": [size // 2] * 4}
    return g.op("Conv", x, weight, bias, strides=[stride, stride], group=groups, **extra)


def upsample(g: GraphBuilder, x: str) -> str:
    """Nearest upsampling by 2 (each pixel repeated)."""
    scales = g.const([1.0, 1.0, 2.0, 2.0])
    return g.op("Resize", x, "", scales, mode="nearest",
                coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip


def instance_norm(g: GraphBuilder, x: str, scale, bias, name: str) -> str:
    """Instance normalisation (epsilon 1e-5) with a per-channel scale and bias."""
    scale, bias = g.const(scale, f"{name}/scale"), g.const(bias, f"{name}/bias")
    return g.op("InstanceNormalization", x, scale, bias, epsilon=1e-5)


def conditional_norm(g: GraphBuilder, x: str, condition: str, params: dict, name: str) -> str:
    """Instance normalisation scaled and shifted by ``condition @ kernel + bias`` (``gamma``
    and ``beta`` Dense layers of a ``(1, D)`` condition)."""
    channels = np.asarray(params["gamma"]["kernel"]).shape[1]
    plain = instance_norm(g, x, np.ones(channels), np.zeros(channels), f"{name}/plain")
    shape = g.const([-1, channels, 1, 1], dtype=np.int64)
    scaled = {}
    for part in ("gamma", "beta"):
        kernel = g.const(params[part]["kernel"], f"{name}/{part}/kernel")
        bias = g.const(params[part]["bias"], f"{name}/{part}/bias")
        value = g.op("Add", g.op("MatMul", condition, kernel), bias)
        scaled[part] = g.op("Reshape", value, shape)
    return g.op("Add", g.op("Mul", plain, scaled["gamma"]), scaled["beta"])


def padded_to(g: GraphBuilder, x: str, multiple: int) -> tuple[str, str]:
    """``x`` reflected at its bottom and right edges up to sides that are multiples of
    ``multiple``, and its original ``(H, W)`` (to crop back with :func:`cropped`)."""
    size = g.op("Slice", g.op("Shape", x), g.const([2], dtype=np.int64),
                g.const([4], dtype=np.int64))  # fmt: skip
    missing = g.op("Mod", g.op("Neg", size), g.const([multiple, multiple], dtype=np.int64))
    pads = g.op("Concat", g.const([0] * 6, dtype=np.int64), missing, axis=0)
    return g.op("Pad", x, pads, mode="reflect"), size


def cropped(g: GraphBuilder, x: str, size: str) -> str:
    """``x``'s top-left ``size`` (``(H, W)``, int64)."""
    starts, axes = g.const([0, 0], dtype=np.int64), g.const([2, 3], dtype=np.int64)
    return g.op("Slice", x, starts, size, axes)


def mean_std(g: GraphBuilder, x: str) -> tuple[str, str]:
    """Per-channel mean and ``sqrt(unbiased var + 1e-5)`` of ``x`` (AdaIN's statistics)."""
    mean = g.op("ReduceMean", x, axes=[2, 3], keepdims=1)
    centred = g.op("Sub", x, mean)
    sums = g.op("ReduceSum", g.op("Mul", centred, centred), g.const([2, 3], dtype=np.int64),
                keepdims=1)  # fmt: skip
    size = g.op("Slice", g.op("Shape", x), g.const([2], dtype=np.int64),
                g.const([4], dtype=np.int64))  # fmt: skip
    count = g.op("Cast", g.op("ReduceProd", size, keepdims=1), to=1)  # 1: FLOAT
    variance = g.op("Div", sums, g.op("Sub", count, g.const([1.0])))
    return mean, g.op("Sqrt", g.op("Add", variance, g.const([1e-5])))
