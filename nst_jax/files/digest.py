"""Files checked by their SHA-256: the digest of a file, and a download that keeps a file
only when its digest is the published one (written atomically: nothing is left behind)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from nst_jax.errors import InputError
from nst_jax.files.atomic import atomic_write


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """A file's hex digest (a ``hashlib`` name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: str | os.PathLike) -> str:
    """A file's SHA-256."""
    return file_digest(path, "sha256")


def download_checked(
    url: str,
    dest: Path,
    expected: str,
    timeout: float,
    advice: str,
    error: type = InputError,
    algorithm: str = "sha256",
) -> Path:
    """Download ``url`` to ``dest``, kept only if its digest (``algorithm``, a ``hashlib``
    name: SHA-256, or the MD5 Keras publishes) is ``expected``.

    Raises:
      error: the digest differs, or the download failed (one line, ending with ``advice``:
        what to do by hand).
    """

    def write(tmp: Path) -> None:
        digest = hashlib.new(algorithm)
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != expected:
            name = algorithm.upper().replace("SHA", "SHA-")
            raise error(f"{url}: its {name} is {digest.hexdigest()}, not {expected}")

    try:
        atomic_write(dest, write)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise error(f"cannot download {url} ({reason}); {advice}") from None
    return dest
