"""How a run's lifecycle talks to the program that drives it: the phases it goes through,
the moment it starts writing outputs, and whether it is asked to stop.

A library call uses :class:`Control` itself, which says nothing and never stops. The
``nst-jax`` command passes its own (its signal handling): before the run owns an output a
signal ends the process at once, after it the run stops at its next safe point, saving
what it promised.
"""

from __future__ import annotations


class Control:
    """A lifecycle's link to its program (module docstring); this one does nothing."""

    def phase(self, name: str) -> None:
        """The run starts phase ``name`` (checking settings, loading, running, ...)."""

    def note(self, text: str) -> None:
        """A decision the run made for itself (a tile, a fallback), for the user to read."""

    def own_outputs(self) -> None:
        """From now on the run writes outputs: a stop waits for its next safe point."""

    def stop_requested(self) -> bool:
        """Whether the run should stop at its next safe point."""
        return False


class Stopped(Exception):  # noqa: N818 (a report, not a fault)
    """A lifecycle stopped when asked, having saved what it promised; its message says what
    was kept and how to continue."""
