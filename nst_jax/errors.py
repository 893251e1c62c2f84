"""User-facing errors.

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
