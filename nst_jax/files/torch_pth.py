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
import math
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from nst_jax.errors import WeightsError, shown

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
MAX_BYTES = 1 << 30  # the networks read here hold 0.1-0.25 GiB
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


class _Storage(NamedTuple):
    """A storage named by the file: made only by :meth:`_Unpickler.persistent_load`."""

    key: str
    dtype: Any


class _StorageType(NamedTuple):
    dtype: Any


def _integers(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or not all(
        type(v) is int and 0 <= v <= MAX_BYTES for v in values
    ):
        raise ValueError(f"a tensor's {what} is not a tuple of small non-negative ints")
    return values


def _rebuild_tensor(storage, offset, size, stride, *_rest) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise ValueError("a tensor without a storage")
    (offset,) = _integers((offset,), "offset")
    size, stride = _integers(size, "size"), _integers(stride, "stride")
    return _Tensor(storage.key, storage.dtype, offset, size, stride)


def _rebuild_parameter(tensor, *_rest):
    return tensor


class _Builder:
    """One of the allowed callables, fresh for each name the file looks up: the pickle's
    BUILD opcode (setting attributes) is refused instead of reaching the function."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise ValueError("a pickle that sets attributes on a function")


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
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
            return _StorageType(STORAGE_DTYPES[name])
        if (module, name) in _ALLOWED:
            return _Builder(_ALLOWED[(module, name)])
        raise WeightsError(f"{self.where}: names {module}.{name}, which a state_dict never does")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsError(f"{self.where}: damaged file (an unknown storage record)")
        if not isinstance(pid[1], _StorageType):
            raise WeightsError(f"{self.where}: a storage of an unknown type")
        return _Storage(str(pid[2]), pid[1].dtype)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of a PyTorch state_dict file (either layout), copied out of the file.

    Raises:
      WeightsError: unreadable, not a state_dict file, a name outside the allowed ones, or
        tensors that run past their storage (one line naming the file).
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # opening a pipe blocks; /dev/zero never ends
            raise WeightsError(f"{path}: not a regular file")
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(0)
            structure, storages = (_read_zip if head == b"PK\x03\x04" else _read_legacy)(f, path)
            if not isinstance(structure, dict):
                raise WeightsError(f"{path}: not a state_dict (a {type(structure).__name__})")
            return {str(k): _array(v, storages, path, k) for k, v in structure.items()}
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    except READ_FAULTS as e:
        kind = type(e).__name__
        raise WeightsError(f"{path}: not a readable PyTorch state_dict ({kind})") from None


def _read_zip(f, path: Path) -> tuple[Any, dict[str, bytes]]:
    archive = zipfile.ZipFile(f)
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise WeightsError(f"{path}: a zip file, but not one PyTorch wrote")
    root = pickles[0].rsplit("/", 1)[0]
    structure = _Unpickler(io.BytesIO(archive.read(pickles[0])), path).load()
    prefix = f"{root}/data/"
    wanted = {v.storage_key for v in _tensors(structure)}
    entries = [i for i in archive.infolist() if i.filename[len(prefix) :] in wanted]
    # The sizes the archive declares, before reading: a small file can inflate to gigabytes.
    if sum(info.file_size for info in entries) > MAX_BYTES:
        raise WeightsError(f"{path}: storages larger than {MAX_BYTES >> 30} GiB")
    return structure, {i.filename[len(prefix) :]: archive.read(i) for i in entries}


def _tensors(structure: Any) -> list[_Tensor]:
    values = structure.values() if isinstance(structure, dict) else ()
    return [v for v in values if isinstance(v, _Tensor)]


def _read_legacy(f, path: Path) -> tuple[Any, dict[str, bytes]]:
    header = [_Unpickler(f, path).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
        raise WeightsError(f"{path}: not a PyTorch file")
    if not isinstance(header[2], dict):
        raise WeightsError(f"{path}: damaged file (its header)")
    if header[2].get("little_endian") is not True:
        raise WeightsError(f"{path}: written on a big-endian machine, which is not read here")
    structure = _Unpickler(f, path).load()
    # Each storage's element size, from the tensors that view it (to read its bytes below).
    sizes = {v.storage_key: np.dtype(v.dtype).itemsize for v in _tensors(structure)}
    keys = _Unpickler(f, path).load()
    storages: dict[str, bytes] = {}
    if not isinstance(keys, list):
        raise WeightsError(f"{path}: damaged file (no list of storages)")
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        size = count * sizes.get(str(key), 1)
        if count < 0 or size + sum(map(len, storages.values())) > MAX_BYTES:
            raise WeightsError(f"{path}: damaged file (a storage of {count} elements)")
        data = f.read(size)
        if len(data) != size:
            raise WeightsError(f"{path}: truncated file")
        storages[str(key)] = data
    return structure, storages


def _array(value: Any, storages: dict[str, bytes], path: Path, name: Any) -> np.ndarray:
    if not isinstance(value, _Tensor):
        raise WeightsError(f"{path}: {shown(name)} is not a tensor")
    if value.storage_key not in storages:
        raise WeightsError(f"{path}: {shown(name)} has no storage in the file")
    flat = np.frombuffer(storages[value.storage_key], dtype=np.dtype(value.dtype).newbyteorder("<"))
    size, stride = value.size, value.stride
    if len(size) != len(stride) or math.prod(size) * flat.itemsize > MAX_BYTES:
        raise WeightsError(f"{path}: {shown(name)} has a damaged shape")
    last = (
        value.offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if all(size)
        else -1
    )
    if last >= flat.size:
        raise WeightsError(f"{path}: {shown(name)} runs past its storage (truncated file?)")
    items = np.dtype(flat.dtype).itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[value.offset :] if all(size) else flat[:0],
        shape=size,
        strides=[s * items for s in stride],
        writeable=False,
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))
