"""The progress of a benchmark run, on stderr: which step runs, k of n, elapsed, what is left.

A full run takes ten minutes or more; without this it prints nothing between
start-up and the final tables, and a hung run looks like a slow one. Three
modes, chosen by :func:`choose_mode`:

- ``live`` (stderr is a terminal): a `rich <https://rich.readthedocs.io>`_
  progress line redrawn in place — the terminal handling is rich's, not ours.
- ``plain`` (stderr is a pipe or a file: CI logs): one line per step, written
  when the step starts, so the last line of a hung run names the step that
  hangs. No terminal control sequences.
- ``quiet`` (``--quiet``): nothing.

The estimate of what is left comes from the plan, not from a rate: every
:class:`Step` carries the seconds its configuration implies (a throughput
step's duration, a sequential step's call count times a nominal cost per
call, …, see ``bench.run.planned_s``). What is left is the planned time of the
steps not yet done, times the pace so far (actual ÷ planned time of the steps
done), so a machine slower than the nominal one corrects the estimate after
its first steps instead of being told a fixed figure. The pace starts from a
prior of 1 worth a twentieth of the plan, so one odd first step (start-up on
a busy machine) does not swing the estimate to double.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, TextIO

import attrs
from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

Mode = Literal["live", "plain", "quiet"]
#: What starts every plain line (tests and log readers look for it).
PREFIX = "[bench]"


class StepOrderError(Exception):
    """A step was run that is not the next one of the plan the progress was built from."""


@attrs.frozen
class Step:
    """One planned measurement: what it is, and the seconds its configuration implies."""

    scenario: str
    target: str
    detail: str
    planned_s: float

    @property
    def label(self) -> str:
        return " ".join(part for part in (self.scenario, self.target, self.detail) if part)


def choose_mode(quiet: bool, stream: TextIO) -> Mode:
    """``quiet`` if asked; ``live`` on a terminal (not ``TERM=dumb``); else ``plain``.

    Decided by ``isatty()`` itself rather than rich's detection, which honours
    ``FORCE_COLOR`` and would then redraw a progress line into a CI log.
    """
    if quiet:
        return "quiet"
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        tty = False
    return "live" if tty and os.environ.get("TERM") != "dumb" else "plain"


def clock_text(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour on)."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class _Call(ProgressColumn):
    """A column whose text is whatever a function of the tracker returns now."""

    def __init__(self, text: Callable[[], str]) -> None:
        super().__init__()
        self._text = text

    def render(self, task: Task) -> Text:
        return Text(self._text())


@attrs.define(eq=False)
class Progress:
    """Tracks a planned run step by step and shows it in the chosen mode.

    Use as a context manager; wrap each step in :meth:`step`, in plan order.

    Resource handling: in ``live`` mode, leaving the context stops rich's
    refresh thread and leaves the last state on screen.

    Error handling: a step out of plan order raises :class:`StepOrderError`; an
    exception inside a step is reported (plain: one ``failed`` line) and
    propagates.
    """

    steps: tuple[Step, ...] = attrs.field(converter=tuple)
    mode: Mode
    stream: TextIO
    clock: Callable[[], float] = time.monotonic
    #: Planned seconds' worth of "pace 1" the observed pace starts from (None:
    #: a twentieth of the plan).
    prior_s: float | None = None
    _started: float = attrs.field(init=False, default=0.0)
    _done: int = attrs.field(init=False, default=0)
    _done_planned_s: float = attrs.field(init=False, default=0.0)
    _done_actual_s: float = attrs.field(init=False, default=0.0)
    _step_started: float | None = attrs.field(init=False, default=None)
    _later_s: list[float] = attrs.field(init=False, factory=list)
    _rich: RichProgress | None = attrs.field(init=False, default=None)
    _task: int | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        # _later_s[i]: planned seconds of the steps after step i.
        total = 0.0
        self._later_s = [0.0] * len(self.steps)
        for i in range(len(self.steps) - 1, -1, -1):
            self._later_s[i] = total
            total += self.steps[i].planned_s

    @property
    def planned_s(self) -> float:
        return sum(s.planned_s for s in self.steps)

    @property
    def done(self) -> int:
        return self._done

    def elapsed_s(self) -> float:
        return self.clock() - self._started

    def pace(self) -> float:
        """Actual ÷ planned time of the steps done so far, from a prior of 1 (see the module)."""
        prior = self.planned_s / 20 if self.prior_s is None else self.prior_s
        if self._done_planned_s + prior <= 0:
            return 1.0
        return (self._done_actual_s + prior) / (self._done_planned_s + prior)

    def left_s(self) -> float:
        """Seconds left by the plan, at the pace so far."""
        pace = self.pace()
        if self._done >= len(self.steps):
            return 0.0
        current = self.steps[self._done]
        later = pace * self._later_s[self._done]
        if self._step_started is None:
            return later + pace * current.planned_s
        into = self.clock() - self._step_started
        return later + max(0.0, pace * current.planned_s - into)

    def __enter__(self) -> Progress:
        self._started = self.clock()
        if self.mode == "plain":
            self._line(f"{len(self.steps)} steps planned, about "
                       f"{clock_text(self.planned_s)} by the plan")
        elif self.mode == "live":
            console = Console(file=self.stream, force_terminal=True, stderr=True)
            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                _Call(lambda: f"{min(self._done + 1, len(self.steps))} of {len(self.steps)}"),
                _Call(lambda: f"elapsed {clock_text(self.elapsed_s())}"),
                _Call(lambda: f"about {clock_text(self.left_s())} left"),
                console=console, refresh_per_second=2,
                redirect_stdout=False, redirect_stderr=False,
            )
            self._rich.start()
            self._task = self._rich.add_task("starting", total=max(self.planned_s, 1e-9))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            if exc[0] is None:
                self._rich.update(self._task, description="done", completed=self.planned_s)
            self._rich.stop()
            self._rich = None
        elif self.mode == "plain" and exc[0] is None:
            self._line(f"done: {self._done} steps in {clock_text(self.elapsed_s())} "
                       f"(the plan said {clock_text(self.planned_s)})")

    @contextmanager
    def step(self, step: Step) -> Iterator[None]:
        """Mark ``step`` running for the body of the ``with``; done when it exits cleanly."""
        if self._done >= len(self.steps) or self.steps[self._done] != step:
            expected = self.steps[self._done].label if self._done < len(self.steps) else "none"
            raise StepOrderError(f"step {step.label!r} run where the plan has {expected!r}")
        k = self._done + 1
        self._step_started = self.clock()
        if self.mode == "plain":
            self._line(f"step {k} of {len(self.steps)}: {step.label}; "
                       f"elapsed {clock_text(self.elapsed_s())}, "
                       f"about {clock_text(self.left_s())} left")
        elif self._rich is not None:
            self._rich.update(self._task, description=step.label)
        try:
            yield
        except BaseException:
            if self.mode == "plain":
                self._line(f"failed at step {k} of {len(self.steps)}: {step.label}, "
                           f"after {clock_text(self.clock() - self._step_started)}")
            raise
        self._done_actual_s += self.clock() - self._step_started
        self._done_planned_s += step.planned_s
        self._done = k
        self._step_started = None
        if self._rich is not None:
            self._rich.update(self._task, completed=self._done_planned_s)

    def _line(self, text: str) -> None:
        self.stream.write(f"{PREFIX} {text}\n")
        self.stream.flush()


def open_progress(steps: Sequence[Step], *, quiet: bool, stream: TextIO) -> Progress:
    """A :class:`Progress` over ``steps`` in the mode ``stream`` and ``quiet`` call for."""
    return Progress(steps, choose_mode(quiet, stream), stream)
