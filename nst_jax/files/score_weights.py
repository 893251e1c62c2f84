"""Weights of the scoring networks: LPIPS (AlexNet and its ``lin`` layers) and ArtFID's
Inception-v3, fetched once (SHA-256 checked), converted to Flax msgpack files in
``weights/``, and read back validated.

The published files are PyTorch pickles; they are read by
:func:`nst_jax.files.torch_pth.read_state_dict`, which runs no code from them. Their
publishers give no MD5 (torchvision names its files by a SHA-256 prefix; Hugging Face lists
the SHA-256 of its LFS objects; LPIPS ships its file in a git repository), so each download
is checked against its full SHA-256.

Offline: put the files (names below) in nst_jax's cache folder
(:func:`nst_jax.files.weights.cache_dir`) and run ``nst-jax weights fetch NAME``: files
already there with the right hash are not downloaded. Or convert files you have with
:func:`convert` (``nst-jax weights convert``), which checks shapes, not hashes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import serialization

from nst_jax.core import inception, lpips
from nst_jax.errors import WeightsError, shown
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import download_checked, sha256
from nst_jax.files.torch_pth import read_state_dict
from nst_jax.files.weights import cache_dir, weights_dir

FORMAT_VERSION = 1


class Published(NamedTuple):
    """One published file: its name in the cache, where it is, its SHA-256."""

    name: str
    url: str
    sha256: str


class ScoreNetwork(NamedTuple):
    """A scoring network's published files, converted file and parameter shapes."""

    files: tuple[Published, ...]
    converted: str
    shapes: Callable[[], Mapping[str, Any]]


SCORE_NETWORKS: dict[str, ScoreNetwork] = {
    "lpips": ScoreNetwork(
        (
            Published(
                "alexnet-owt-7be5be79.pth",
                "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
            ),
            Published(
                "lpips-v0.1-alex.pth",
                "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/"
                "v0.1/alex.pth",
                "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
            ),
        ),
        "lpips_alex.msgpack",
        lpips.param_shapes,
    ),
    "artfid": ScoreNetwork(
        (
            Published(
                "art_inception.pth",
                "https://huggingface.co/matthias-wright/art_inception/resolve/main/"
                "art_inception.pth",
                "5bc1c20380401911d99d528b7b6e4430044b56edd5f7f26467222f3fb7c54e7e",
            ),
        ),
        "art_inception.msgpack",
        inception.param_shapes,
    ),
}
NAMES = {"lpips": "LPIPS", "artfid": "ArtFID"}


def score_network(name: str) -> ScoreNetwork:
    if name not in SCORE_NETWORKS:
        raise ValueError(f"no scoring network {name!r}; known: {', '.join(SCORE_NETWORKS)}")
    return SCORE_NETWORKS[name]


def lpips_params(alexnet: Mapping[str, np.ndarray], lin: Mapping[str, np.ndarray]) -> dict:
    """LPIPS params from torchvision's AlexNet state_dict and LPIPS' ``lin`` state_dict."""
    params: dict[str, Any] = {"lin": {}}
    for index, (name, torch_index) in enumerate(zip(lpips.CONVS, (0, 3, 6, 8, 10), strict=True)):
        weight = _get(alexnet, f"features.{torch_index}.weight")
        params[name] = {
            "kernel": np.transpose(weight, (2, 3, 1, 0)),  # OIHW -> HWIO
            "bias": _get(alexnet, f"features.{torch_index}.bias"),
        }
        params["lin"][f"lin{index + 1}"] = _get(lin, f"lin{index}.model.1.weight", 1).reshape(-1)
    return params


def inception_params(state: Mapping[str, np.ndarray]) -> dict:
    """ArtFID's Inception params from its state_dict (the heads, which FID does not use,
    are left out)."""
    params = {}
    for name in inception.LAYOUT:
        params[name] = {
            "kernel": np.transpose(_get(state, f"{name}.conv.weight"), (2, 3, 1, 0)),
            "gamma": _get(state, f"{name}.bn.weight"),
            "beta": _get(state, f"{name}.bn.bias"),
            "mean": _get(state, f"{name}.bn.running_mean"),
            "var": _get(state, f"{name}.bn.running_var"),
        }
    return params


class _MissingKeyError(KeyError):
    """A key missing from the ``index``-th file's state_dict."""

    def __init__(self, key: str, index: int):
        super().__init__(key)
        self.key, self.index = key, index


def _get(state: Mapping[str, np.ndarray], key: str, index: int = 0) -> np.ndarray:
    if key not in state:
        raise _MissingKeyError(key, index)
    return np.asarray(state[key])


def convert(name: str, sources: list[str | os.PathLike], dest: str | os.PathLike | None = None):
    """Convert published PyTorch files to the Flax-native file (default: in ``weights/``).

    ``sources``: LPIPS' AlexNet file then its ``lin`` file; ArtFID's checkpoint.

    Raises:
      WeightsError: a file missing, unreadable, or not the network's (one line).
    """
    network = score_network(name)
    if len(sources) != len(network.files):
        wanted = " and ".join(p.name for p in network.files)
        raise WeightsError(f"{NAMES[name]} converts from {len(network.files)} file(s): {wanted}")
    states = [read_state_dict(path) for path in sources]
    try:
        params = lpips_params(*states) if name == "lpips" else inception_params(*states)
    except _MissingKeyError as e:
        which = shown(sources[e.index])
        raise WeightsError(f"{which}: not {NAMES[name]}'s weights (no {e.key!r})") from None
    params = _validated(name, params, sources[0])
    path = Path(dest) if dest is not None else weights_dir() / network.converted
    payload = {"format": f"nst_jax-{name}", "version": FORMAT_VERSION, "params": params}
    atomic_write(path, lambda tmp: tmp.write_bytes(serialization.msgpack_serialize(payload)))
    return path


def _validated(name: str, params: Mapping, where: Any) -> dict:
    """``params`` as float32 arrays of the network's shapes, or one line naming the first
    parameter that is not."""
    shapes = jax.tree_util.tree_leaves_with_path(
        score_network(name).shapes(), is_leaf=lambda x: isinstance(x, tuple)
    )
    out: dict = {}
    for path, shape in shapes:
        keys = [k.key for k in path]
        value = params
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        label = "/".join(keys)
        if not isinstance(value, np.ndarray) or value.shape != tuple(shape):
            got = getattr(value, "shape", type(value).__name__)
            raise WeightsError(f"{shown(where)}: {label} should be {tuple(shape)}, got {got}")
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise WeightsError(f"{shown(where)}: {label} is not finite floats")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value.astype(np.float32)
    return out


def find(name: str, path: str | os.PathLike | None = None) -> Path:
    """The converted file: ``path``, else the one in ``weights/``.

    Raises:
      WeightsError: none there, with how to get it (one line).
    """
    network = score_network(name)
    found = Path(path) if path is not None else weights_dir() / network.converted
    if found.is_file():
        return found
    if path is not None:
        reason = "not a file" if found.exists() else "no such file"
        raise WeightsError(f"{shown(found)}: {reason}")
    files = ", ".join(p.name for p in network.files)
    raise WeightsError(
        f"{NAMES[name]} needs its weights: run `nst-jax weights fetch {name}` (offline: put "
        f"{files} in {cache_dir()} first)"
    )


def load(name: str, path: str | os.PathLike | None = None) -> dict:
    """The network's params from its converted file (:func:`find`), validated, as arrays."""
    found = find(name, path)
    try:
        payload = serialization.msgpack_restore(found.read_bytes())
    except OSError as e:
        raise WeightsError(f"{shown(found)}: cannot read ({e.strerror})") from None
    except Exception as e:  # msgpack raises several unrelated types for corrupt input
        raise WeightsError(f"{shown(found)}: truncated or corrupt weights file ({e})") from None
    if not isinstance(payload, dict) or payload.get("format") != f"nst_jax-{name}":
        raise WeightsError(f"{shown(found)}: not an nst_jax {NAMES[name]} weights file")
    if payload.get("version") != FORMAT_VERSION or not isinstance(payload.get("params"), dict):
        raise WeightsError(f"{shown(found)}: unsupported or damaged {NAMES[name]} weights file")
    return jax.tree.map(jax.numpy.asarray, _validated(name, payload["params"], found))


def fetch(name: str, timeout: float = 30.0) -> tuple[list[Path], Path]:
    """Download the network's published files into the cache (each unless there already
    with its SHA-256), then :func:`convert` them into ``weights/``.

    Returns:
      ``(downloaded files, converted file)``.
    """
    network = score_network(name)
    paths = []
    for published in network.files:
        dest = cache_dir() / published.name
        if not (dest.is_file() and sha256(dest) == published.sha256):
            _download(published, dest, timeout)
        paths.append(dest)
    return paths, convert(name, paths)


def _download(published: Published, dest: Path, timeout: float) -> None:
    advice = f"put {published.name} in {dest.parent} and rerun"
    download_checked(published.url, dest, published.sha256, timeout, advice, WeightsError)
