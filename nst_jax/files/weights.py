"""VGG weights: the official Keras HDF5 files, their Flax-native conversion, and where to
find them.

The official files are Keras' ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`` and
``vgg16_...notop.h5`` (legacy Keras HDF5 layout, read by :mod:`nst_jax.files.keras_h5`);
:data:`NETWORKS` names each one's file, address and MD5. Every function takes ``network``,
``"vgg19"`` by default.

The converted file is a Flax msgpack (``flax.serialization``; no pickle anywhere) holding
``{"format", "version", "params"}``. Every load, of either kind, is validated strictly: all
the network's conv layers (16 for VGG19, 13 for VGG16), exact shapes, finite values; errors
name the file and the layer at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from nst_jax.core.layers import VGG16_BLOCKS, VGG19_BLOCKS, Blocks, conv_shapes
from nst_jax.errors import WeightsError, shown
from nst_jax.files import keras_h5
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import download_checked, file_digest

KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"


class Network(NamedTuple):
    """One network's official weights and their converted file.

    Attributes:
      official: the official file's name; it is fetched from ``url``.
      url: where it is published.
      md5: its hash, the one Keras' own loader (``keras.applications``) checks.
      converted: the converted file's name in ``weights/``.
      format: the converted file's format tag.
      blocks: the network (:mod:`nst_jax.core.layers`).
    """

    official: str
    url: str
    md5: str
    converted: str
    format: str
    blocks: Blocks


def _keras(name: str, md5: str, blocks: Blocks) -> Network:
    official = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    url = f"{KERAS_URL}/{name}/{official}"
    return Network(official, url, md5, f"{name}_notop.msgpack", f"nst_jax-{name}", blocks)


NETWORKS: dict[str, Network] = {
    "vgg19": _keras("vgg19", "253f8cb515780f3b799900260a226db6", VGG19_BLOCKS),
    "vgg16": _keras("vgg16", "6d6bbae143d832006294945121d1f1fc", VGG16_BLOCKS),
}
OFFICIAL_NAME = NETWORKS["vgg19"].official
OFFICIAL_URL = NETWORKS["vgg19"].url
OFFICIAL_MD5 = NETWORKS["vgg19"].md5
CONVERTED_NAME = NETWORKS["vgg19"].converted
FORMAT = NETWORKS["vgg19"].format
FORMAT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FETCH_COMMAND = "nst-jax weights fetch"

NumpyParams = dict[str, dict[str, np.ndarray]]


def network_of(name: str) -> Network:
    """The :class:`Network` called ``name``, or ``ValueError`` naming the known ones."""
    if name not in NETWORKS:
        raise ValueError(f"no official weights for {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name]


# ---------------------------------------------------------------------------------------------
# Places


def weights_dir() -> Path:
    """Where converted weights live: ``$NST_JAX_WEIGHTS_DIR``, else the checkout's ``weights/``
    folder (an editable install), else nst_jax's cache folder."""
    if os.environ.get("NST_JAX_WEIGHTS_DIR"):
        return Path(os.environ["NST_JAX_WEIGHTS_DIR"])
    checkout = Path(__file__).resolve().parent.parent / "weights"
    return checkout if checkout.is_dir() else cache_dir()


def cache_dir() -> Path:
    """nst_jax's download cache: ``$NST_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/nst_jax``."""
    if os.environ.get("NST_JAX_CACHE_DIR"):
        return Path(os.environ["NST_JAX_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "nst_jax"


def keras_cache_file(network: str = "vgg19") -> Path:
    """Where Keras itself caches the official file (``$KERAS_HOME`` or ``~/.keras``)."""
    keras_home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(keras_home) / "models" / network_of(network).official


def candidates(network: str = "vgg19") -> list[tuple[str, Path]]:
    """Places searched when no path is given, in order, each with a short label
    (``$NST_JAX_WEIGHTS`` names VGG19's file only)."""
    places = []
    if network == "vgg19" and os.environ.get("NST_JAX_WEIGHTS"):
        places.append(("$NST_JAX_WEIGHTS", Path(os.environ["NST_JAX_WEIGHTS"])))
    places.append(("converted file", weights_dir() / network_of(network).converted))
    places.append(("Keras cache", keras_cache_file(network)))
    places.append(("nst_jax cache", cache_dir() / network_of(network).official))
    return places


def find_weights(path: str | os.PathLike | None = None, network: str = "vgg19") -> Path:
    """The weights file to use: ``path`` if given, else the first existing candidate.

    Raises:
      WeightsError: ``path`` does not exist, or no candidate does (the message names every
        place looked and the command that fetches the file).
    """
    if path is None and network == "vgg19" and os.environ.get("NST_JAX_WEIGHTS"):
        # Named by the user: missing is an error, not a reason to use some other file.
        path, named = Path(os.environ["NST_JAX_WEIGHTS"]), " (named by $NST_JAX_WEIGHTS)"
    else:
        named = ""
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise WeightsError(f"{path}: is a folder, not a weights file{named}")
        if not path.is_file():
            # A link loop, a pipe or a device is there, but is no file to read.
            what = "not a regular file" if os.path.lexists(path) else "no such weights file"
            raise WeightsError(f"{shown(path)}: {what}{named}")
        return path
    places = candidates(network)
    for _, place in places:
        if place.is_file():
            return place
    looked = "; ".join(f"{label} {place}" for label, place in places)
    command = FETCH_COMMAND if network == "vgg19" else f"{FETCH_COMMAND} {network}"
    raise WeightsError(
        f"{network.upper()} weights not found (looked in: {looked}); run `{command}` to "
        "download them"
    )


# ---------------------------------------------------------------------------------------------
# Validation


def validate(params: Mapping, source: str | os.PathLike, network: str = "vgg19") -> NumpyParams:
    """Check that ``params`` holds exactly the network's convs (VGG19's 16) with the right
    shapes and finite float values; return them as float32 NumPy arrays.

    Raises:
      WeightsError: naming ``source`` and the first layer at fault (and the network the
        file holds, when it is another known one).
    """
    checked = {}
    for layer, (kernel_shape, bias_shape) in conv_shapes(network_of(network).blocks).items():
        if layer not in params:
            raise WeightsError(f"{source}: layer {layer} is missing{_other_network(params)}")
        for name, shape in (("kernel", kernel_shape), ("bias", bias_shape)):
            value = params[layer].get(name) if isinstance(params[layer], Mapping) else None
            if value is None:
                raise WeightsError(f"{source}: layer {layer} has no {name}")
            value = np.asarray(value)
            if value.shape != shape:
                raise WeightsError(
                    f"{source}: layer {layer} {name} has shape {value.shape}, expected "
                    f"{shape}{_other_network(params)}"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise WeightsError(f"{source}: layer {layer} {name} has dtype {value.dtype}")
            if not np.all(np.isfinite(value)):
                raise WeightsError(f"{source}: layer {layer} {name} has non-finite values")
            checked.setdefault(layer, {})[name] = value.astype(np.float32, copy=False)
    extra = sorted(set(params) - set(checked))
    if extra:
        raise WeightsError(f"{source}: layer {extra[0]} is not {network}'s{_other_network(params)}")
    return checked


def _other_network(params: Mapping) -> str:
    """`` (VGG16's weights: ...)`` when ``params`` holds exactly another known network's
    layers, else nothing."""
    for name, known in NETWORKS.items():
        if set(params) == set(conv_shapes(known.blocks)):
            option = "--extractor" if name != "vgg19" else "no --extractor"
            return f" (these are {name.upper()}'s weights: give {option} {name})".replace(
                "no --extractor vgg19", "--extractor vgg19"
            )
    return ""


# ---------------------------------------------------------------------------------------------
# Converted (Flax msgpack) files


def save_converted(params: Mapping, path: str | os.PathLike, network: str = "vgg19") -> Path:
    """Write validated params as a Flax msgpack file, atomically. Returns the path."""
    path = Path(path)
    params = validate(params, path, network)
    payload = {"format": network_of(network).format, "version": FORMAT_VERSION, "params": params}
    atomic_write(path, lambda tmp: tmp.write_bytes(serialization.msgpack_serialize(payload)))
    return path


def read_converted(path: str | os.PathLike, network: str = "vgg19") -> NumpyParams:
    """Read and validate a file written by :func:`save_converted`."""
    path = Path(path)
    data = path.read_bytes()
    if not data:
        raise WeightsError(f"{path}: empty file")
    if not (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):  # a msgpack map starts so
        raise WeightsError(f"{path}: neither a Keras HDF5 file nor an nst_jax weights file")
    try:
        payload = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise WeightsError(f"{path}: truncated or corrupt weights file ({e})") from None
    formats = {known.format: name for name, known in NETWORKS.items()}
    if not isinstance(payload, dict) or payload.get("format") not in formats:
        raise WeightsError(f"{path}: not an nst_jax weights file")
    if payload.get("version") != FORMAT_VERSION:
        raise WeightsError(f"{path}: unsupported format version {payload.get('version')}")
    if not isinstance(payload.get("params"), dict):
        raise WeightsError(f"{path}: damaged weights file (no params)")
    return validate(payload["params"], path, network)


def _is_hdf5(path: Path) -> bool:
    """Whether ``path`` starts with the HDF5 signature; raises ``WeightsError`` if unreadable."""
    try:
        with path.open("rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror})") from None
    if not head:
        raise WeightsError(f"{path}: empty file")
    return head == HDF5_SIGNATURE


def read_params(path: str | os.PathLike, network: str = "vgg19") -> NumpyParams:
    """Read either kind of weights file, chosen by its content, not its name."""
    path = Path(path)
    if _is_hdf5(path):
        return validate(keras_h5.read_keras_h5(path), path, network)
    if path.suffix == ".h5":
        raise WeightsError(f"{path}: not an HDF5 file")
    return read_converted(path, network)


def converted_path(dest: str | os.PathLike | None = None, network: str = "vgg19") -> Path:
    """Where :func:`convert` writes: ``dest``, or the converted file in ``weights/``."""
    return Path(dest) if dest is not None else weights_dir() / network_of(network).converted


def convert(
    source: str | os.PathLike, dest: str | os.PathLike | None = None, network: str = "vgg19"
) -> Path:
    """Convert a Keras ``.h5`` (or re-save a converted file) to the Flax-native format.

    Args:
      source: the weights file to read.
      dest: where to write; defaults to the network's converted file in ``weights_dir()``.
      network: ``"vgg19"`` or ``"vgg16"``.

    Returns:
      The path written.
    """
    params = read_params(source, network)
    return save_converted(params, converted_path(dest, network), network)


def load_weights(
    path: str | os.PathLike | None = None, network: str = "vgg19"
) -> dict[str, dict[str, jax.Array]]:
    """Load a VGG network's params from its official ``.h5`` or a converted file.

    Args:
      path: a weights file; ``None`` searches (VGG19's ``$NST_JAX_WEIGHTS``), the converted
        file in ``weights/``, Keras' cache and nst_jax's cache, in that order.
      network: ``"vgg19"`` or ``"vgg16"`` (:data:`NETWORKS`).

    Returns:
      ``{layer: {"kernel": (3, 3, in, out), "bias": (out,)}}`` float32 device arrays.

    Raises:
      WeightsError: nothing found, or the file is broken (the message names it and the fault).
    """
    params = read_params(find_weights(path, network), network)
    return jax.tree.map(jnp.asarray, params)


def load_vgg19(path: str | os.PathLike | None = None) -> dict[str, dict[str, jax.Array]]:
    """VGG19's params (:func:`load_weights`), the tutorial's network."""
    return load_weights(path, "vgg19")


def load_vgg16(path: str | os.PathLike | None = None) -> dict[str, dict[str, jax.Array]]:
    """VGG16's params (:func:`load_weights`): Keras' ``vgg16_..._notop.h5`` or its
    conversion."""
    return load_weights(path, "vgg16")


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file (the hash Keras publishes and checks)."""
    return file_digest(path, "md5")


def info(path: str | os.PathLike | None = None, network: str = "vgg19") -> dict[str, object]:
    """Describe a weights file: path, kind, MD5, whether it is the official file, sizes."""
    path = find_weights(path, network)
    params = read_params(path, network)
    digest = md5sum(path)
    return {
        "path": str(path),
        "network": network,
        "kind": "keras-hdf5" if _is_hdf5(path) else "nst_jax-msgpack",
        "md5": digest,
        "official": digest == network_of(network).md5,
        "layers": len(params),
        "parameters": int(sum(a.size for layer in params.values() for a in layer.values())),
        "bytes": path.stat().st_size,
    }


# ---------------------------------------------------------------------------------------------
# Fetching


def download(url: str, dest: Path, md5: str, timeout: float = 30.0, network: str = "vgg19") -> Path:
    """Download ``url`` to ``dest`` atomically, refusing it unless its MD5 is ``md5``."""
    option = "" if network == "vgg19" else f" --network {network}"
    advice = (f"download it by hand and run `nst-jax weights convert FILE{option}`, or put it "
              f"at {keras_cache_file(network)}")  # fmt: skip
    return download_checked(url, dest, md5, timeout, advice, WeightsError, "md5")


def fetch(
    url: str | None = None, md5: str | None = None, network: str = "vgg19"
) -> tuple[Path, Path]:
    """Download the network's official file into nst_jax's cache (if not already there,
    hash-checked), then convert it into ``weights/``.

    Args:
      url: where from (default: the official address, :data:`NETWORKS`).
      md5: its hash (default: the official one).
      network: ``"vgg19"`` or ``"vgg16"``.

    Returns:
      ``(downloaded file, converted file)``.
    """
    known = network_of(network)
    url, md5 = url or known.url, md5 or known.md5
    dest = cache_dir() / known.official
    if not (dest.is_file() and md5sum(dest) == md5):
        download(url, dest, md5, network=network)
    return dest, convert(dest, network=network)
