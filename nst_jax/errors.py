"""User-facing errors, and how they name a path.

Anything a user can fix (a bad file, a bad option, missing weights) raises :class:`InputError`
with one line that names the file and what is wrong. The CLI prints that line and exits with
status 2; anything else is an internal error (status 1).
"""


class InputError(ValueError):
    """A problem with user input that the user can act on; the message is one line."""


class WeightsError(InputError):
    """The VGG19 weights are missing, unreadable or do not match the network."""


class ImageError(InputError):
    """An image file cannot be read or written as asked."""


class OutputError(InputError):
    """A file cannot be written where asked: an input in the way, a clash between outputs,
    a folder that cannot be written, or a disk that filled up."""


def shown(path: object, limit: int = 160) -> str:
    """``path`` as a message names it: whole, or its start and end around an ellipsis when
    longer than ``limit`` characters (a 5 MB name read from a file is not repeated)."""
    text = str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]}"
