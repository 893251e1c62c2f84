"""Read a PyTorch ``state_dict`` file (``.pth``) as NumPy arrays, without PyTorch and
without running any code the file names.

A ``.pth`` file is a pickle, and unpickling runs whatever callables it names. Here the
unpickler knows four names and no others: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` (rebuilt as a NumPy view of its storage), the typed
storage classes (``torch.FloatStorage``, ...: a dtype) and ``torch._utils._rebuild_parameter``;
any other name refuses the file. Both of PyTorch's layouts are read:

- the zip archive (``torch.save`` since PyTorch 1.6): ``<root>/data.pkl`` holds the
  structure, ``<root>/data/<key>`` each storage's little-endian bytes;
- the legacy stream (``_use_new_zipfile_serialization=False``, and every file written
  before 1.6, as LPIPS' released weights): a magic number, the protocol (1001), the
  system's sizes, the structure, the storages' keys, then each storage as its element count
  (int64) and its bytes.

Reference: ``torch/serialization.py`` (``_save``, ``_legacy_save``, ``_load``).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nst_jax.errors import WeightsError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_BYTES = 1 << 32  # no storage of the networks read here comes near 4 GiB
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


# What a damaged or foreign file raises while it is read (the pickle machine's own errors).
READ_FAULTS = (
    EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError,
    struct.error, pickle.UnpicklingError, zipfile.BadZipFile, MemoryError,
)  # fmt: skip


class _Tensor(NamedTuple):
    storage_key: str
    dtype: Any
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, offset, size, stride, *_rest) -> _Tensor:
    key, dtype = storage
    return _Tensor(key, dtype, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(tensor, *_rest):
    return tensor


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
    """An unpickler that builds nothing but dicts and tensor descriptions (module docstring)."""

    def __init__(self, file, where: Path):
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage-type", STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise WeightsError(f"{self.where}: names {module}.{name}, which a state_dict never does")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsError(f"{self.where}: damaged file (an unknown storage record)")
        kind = pid[1]
        if not (isinstance(kind, tuple) and kind[:1] == ("storage-type",)):
            raise WeightsError(f"{self.where}: a storage of an unknown type")
        return (str(pid[2]), kind[1])


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of a PyTorch state_dict file (either layout), copied out of the file.

    Raises:
      WeightsError: unreadable, not a state_dict file, a name outside the allowed ones, or
        tensors that run past their storage (one line naming the file).
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(0)
            structure, storages = (_read_zip if head == b"PK\x03\x04" else _read_legacy)(f, path)
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    except READ_FAULTS as e:
        kind = type(e).__name__
        raise WeightsError(f"{path}: not a readable PyTorch state_dict ({kind})") from None
    if not isinstance(structure, dict):
        raise WeightsError(f"{path}: not a state_dict (a {type(structure).__name__})")
    return {str(name): _array(value, storages, path, name) for name, value in structure.items()}


def _read_zip(f, path: Path) -> tuple[Any, dict[str, bytes]]:
    archive = zipfile.ZipFile(f)
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise WeightsError(f"{path}: a zip file, but not one PyTorch wrote")
    root = pickles[0].rsplit("/", 1)[0]
    structure = _Unpickler(io.BytesIO(archive.read(pickles[0])), path).load()
    prefix = f"{root}/data/"
    storages = {n[len(prefix) :]: archive.read(n) for n in names if n.startswith(prefix)}
    return structure, storages


def _read_legacy(f, path: Path) -> tuple[Any, dict[str, bytes]]:
    header = [_Unpickler(f, path).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise WeightsError(f"{path}: not a PyTorch file")
    if not (isinstance(header[2], dict) and header[2].get("little_endian") is True):
        raise WeightsError(f"{path}: written on a big-endian machine, which is not read here")
    structure = _Unpickler(f, path).load()
    # Each storage's element size, from the tensors that view it (to read its bytes below).
    values = structure.values() if isinstance(structure, dict) else ()
    sizes = {v.storage_key: np.dtype(v.dtype).itemsize for v in values if isinstance(v, _Tensor)}
    keys = _Unpickler(f, path).load()
    storages = {}
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        size = count * sizes.get(str(key), 1)
        if count < 0 or size > MAX_BYTES:
            raise WeightsError(f"{path}: damaged file (a storage of {count} elements)")
        data = f.read(size)
        if len(data) != size:
            raise WeightsError(f"{path}: truncated file")
        storages[str(key)] = data
    return structure, storages


def _array(value: Any, storages: dict[str, bytes], path: Path, name: Any) -> np.ndarray:
    if not isinstance(value, _Tensor):
        raise WeightsError(f"{path}: {name!r} is not a tensor")
    if value.storage_key not in storages:
        raise WeightsError(f"{path}: {name!r} has no storage in the file")
    flat = np.frombuffer(storages[value.storage_key], dtype=np.dtype(value.dtype).newbyteorder("<"))
    size, stride = value.size, value.stride
    if len(size) != len(stride) or min(size + stride + (value.offset,), default=0) < 0:
        raise WeightsError(f"{path}: {name!r} has a damaged shape")
    last = (
        value.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if all(size)
        else -1
    )
    if last >= flat.size:
        raise WeightsError(f"{path}: {name!r} runs past its storage (truncated file?)")
    items = np.dtype(flat.dtype).itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[value.offset :] if all(size) else flat[:0],
        shape=size,
        strides=[s * items for s in stride],
        writeable=False,
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))
