"""bench/progress.py on a fake clock: the lines each mode writes and the plan-based estimate."""

from __future__ import annotations

import io

import pytest

from bench.progress import Progress, Step, StepOrderError, choose_mode, clock_text

STEPS = [Step("sequential", "orch-sse", "2000 calls", 10.0),
         Step("throughput", "orch-http", "8 sessions for 5 s", 20.0),
         Step("idle", "proxy-sse", "1000 sessions held 31 s", 30.0)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_carry_step_k_of_n_elapsed_and_the_plan_s_estimate() -> None:
    clock, out = FakeClock(), io.StringIO()
    with Progress(STEPS, "plain", out, clock=clock, prior_s=0) as p:
        with p.step(STEPS[0]):
            clock.now += 20  # twice the plan: pace 2
        with p.step(STEPS[1]):
            clock.now += 20  # as planned: pace (20+20)/(10+20)
        with p.step(STEPS[2]):
            clock.now += 30
    assert out.getvalue().splitlines() == [
        "[bench] 3 steps planned, about 1:00 by the plan",
        "[bench] step 1 of 3: sequential orch-sse 2000 calls; elapsed 0:00, about 1:00 left",
        # what is left is the plan's 20 + 30 s at the pace seen so far (2): 1:40
        "[bench] step 2 of 3: throughput orch-http 8 sessions for 5 s; elapsed 0:20, "
        "about 1:40 left",
        "[bench] step 3 of 3: idle proxy-sse 1000 sessions held 31 s; elapsed 0:40, "
        "about 0:40 left",
        "[bench] done: 3 steps in 1:10 (the plan said 1:00)",
    ]


def test_the_estimate_counts_down_inside_a_step_and_never_below_the_later_steps() -> None:
    clock = FakeClock()
    with Progress(STEPS, "quiet", io.StringIO(), clock=clock, prior_s=0) as p:
        assert p.left_s() == 60
        with p.step(STEPS[0]):
            clock.now += 4
            assert p.left_s() == 56
            clock.now += 100  # far over its plan: only the later steps are left
            assert p.left_s() == 50
        assert p.pace() == pytest.approx(10.4)
        assert p.left_s() == pytest.approx(10.4 * 50)


def test_the_prior_keeps_one_odd_first_step_from_doubling_the_estimate() -> None:
    clock = FakeClock()
    steps = [Step("start", "targets", "", 5.0)] + [Step("throughput", "t", str(i), 5.0)
                                                   for i in range(39)]
    with Progress(steps, "quiet", io.StringIO(), clock=clock) as p:  # prior: 200/20 = 10 s
        with p.step(steps[0]):
            clock.now += 10
        assert p.pace() == pytest.approx((10 + 10) / (5 + 10))
        assert p.left_s() == pytest.approx(195 * 20 / 15)


def test_quiet_writes_nothing() -> None:
    out = io.StringIO()
    with Progress(STEPS, "quiet", out, clock=FakeClock()) as p:
        for s in STEPS:
            with p.step(s):
                pass
    assert out.getvalue() == ""


def test_live_mode_draws_with_rich_and_ends_on_the_last_state() -> None:
    out = Tty()
    with Progress(STEPS, "live", out) as p:
        for s in STEPS:
            with p.step(s):
                pass
    text = out.getvalue()
    assert "\x1b[" in text  # drawn in place, by rich
    assert "3 of 3" in text and "about 0:00 left" in text and "done" in text


def test_a_step_out_of_plan_order_is_refused() -> None:
    with Progress(STEPS, "quiet", io.StringIO(), clock=FakeClock()) as p:
        with pytest.raises(StepOrderError):
            with p.step(STEPS[1]):
                pass


def test_a_failing_step_is_named_and_its_error_propagates() -> None:
    clock, out = FakeClock(), io.StringIO()
    with pytest.raises(RuntimeError, match="loadgen"):
        with Progress(STEPS, "plain", out, clock=clock) as p:
            with p.step(STEPS[0]):
                clock.now += 7
                raise RuntimeError("loadgen sequential failed")
    assert out.getvalue().splitlines()[-1] == (
        "[bench] failed at step 1 of 3: sequential orch-sse 2000 calls, after 0:07")


def test_mode_follows_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich would call a pipe a terminal; we do not
    assert choose_mode(False, io.StringIO()) == "plain"
    assert choose_mode(False, Tty()) == "live"
    assert choose_mode(True, Tty()) == "quiet"
    monkeypatch.setenv("TERM", "dumb")
    assert choose_mode(False, Tty()) == "plain"


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 59.6, 61, 635, 3725)] == [
        "0:00", "1:00", "1:01", "10:35", "1:02:05"]
