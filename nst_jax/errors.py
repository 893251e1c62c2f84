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
    longer than ``limit`` characters (a 5 MB name read from a file is not repeated), with
    what a terminal would act on escaped: control characters (a newline would make two
    lines, an escape sequence clear the screen) as ``\\n``, ``\\x1b``, and bytes that are not
    UTF-8 (Python's surrogate escapes) as ``\\xff``."""
    text = str(path)
    if len(text) > limit:
        text = f"{text[: limit // 2]}...{text[-limit // 4 :]}"
    return "".join(_escaped(c) for c in text) if not text.isprintable() else text


def _escaped(char: str) -> str:
    if char.isprintable():
        return char
    if "\udc80" <= char <= "\udcff":  # a byte os.fsdecode could not decode
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]
