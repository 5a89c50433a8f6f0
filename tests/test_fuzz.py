"""Fuzz the tools with corrupted inputs (dan/fuzz.py): exit 0, or exit 2 with one line; a finished
run's folder never changes. Bounded for CI; `python tools/fuzz.py --examples 2000` runs longer."""

import signal
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dan import fuzz

# ~15-20 s per property on 2 CPU cores (most examples fail fast; the valid ones train one batch)
FUZZ_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def ws():
    w = fuzz.Workspace()
    yield w
    w.close()


@pytest.mark.parametrize("case", sorted(fuzz.CASES))
def test_fuzz(ws, case):
    @FUZZ_SETTINGS
    @given(st.data())
    def prop(data):
        fuzz.CASES[case](ws, data)

    prop()


def test_the_contract_check_can_fail():
    with pytest.raises(fuzz.ContractError):
        fuzz.check_contract(1, "Traceback (most recent call last):\n  ...\nValueError: x\n", "x")
    with pytest.raises(fuzz.ContractError):
        fuzz.check_contract(2, "error: one\nerror: two\n", "x")
    fuzz.check_contract(2, "error: budget 'x' cannot be read: write e.g. 25%\n", "x")
    fuzz.check_contract(2, "error: cannot read the count 'Traceback': write a number\n", "x")  # the user's word
    fuzz.check_contract(0, "", "x")


# an alarm that strikes inside a callback whose exceptions Python swallows (hypothesis's gc timer)
# is reported as unraisable; the repeating timer of run_in_process stops the run at the next one
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_valid_run_that_trains_for_real_is_stopped_at_the_time_limit_and_counted(tmp_path):
    code, err = fuzz.run_in_process("train.py", fuzz.TINY + ["--epochs", "100000", "--out", str(tmp_path / "r")],
                                    time_limit=4)
    assert code is fuzz.STILL_RUNNING, err
    before = len(fuzz.STOPPED)
    fuzz.check_contract(code, err, "long run")
    assert len(fuzz.STOPPED) == before + 1
    # stopped between its error line and its exit: judged as that exit
    fuzz.check_contract(fuzz.STILL_RUNNING, "error: something\n", "x")
    with pytest.raises(fuzz.ContractError):
        fuzz.check_contract(fuzz.STILL_RUNNING, "Traceback (most recent call last):\nValueError: x\n", "x")
    # the limit leaves no alarm behind, and a refused input still returns 2 within it
    code, err = fuzz.run_in_process("train.py", fuzz.TINY + ["--epochs", "-1", "--out", str(tmp_path / "s")])
    assert code == 2 and err.startswith("error:")


def test_an_alarm_swallowed_by_the_tool_is_followed_by_another(monkeypatch):
    # What hung CI for 90 minutes: the one alarm struck where its exception was swallowed (a
    # finalizer, a callback) and the run went on. The timer repeats until the run is stopped.
    swallowed = []

    class Tool:
        @staticmethod
        def main(argv):
            while True:
                try:
                    time.sleep(0.01)
                except fuzz._TimeLimit:
                    if swallowed:
                        raise
                    swallowed.append(time.monotonic())

    monkeypatch.setattr(fuzz, "load_tool", lambda name: Tool)
    start = time.monotonic()
    code, _ = fuzz.run_in_process("anything", [], time_limit=0.5)
    assert code is fuzz.STILL_RUNNING and len(swallowed) == 1
    assert time.monotonic() - start < 60  # a hang, not a speed: the limit is 0.5 s
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no alarm left behind


def test_an_alarm_swallowed_in_a_finalizer_leaves_nothing_on_the_runs_stderr(monkeypatch):
    # Fuzz seed 5000: the alarm struck in hypothesis's gc callback, Python printed "Exception
    # ignored in ..." into the run's stderr, and a valid run stopped at the limit was judged as a
    # run that printed a traceback. The harness's own swallowed alarm is not the tool's output.
    reached = []

    class Slow:
        def __del__(self):  # the tool's time is spent here until the first alarm has struck
            end = time.monotonic() + 0.05
            while time.monotonic() < end:
                pass

    class Tool:
        @staticmethod
        def main(argv):
            start = time.monotonic()
            while time.monotonic() - start < 0.8:  # the alarm at 0.5 s strikes inside a finalizer
                Slow()
            reached.append(True)  # not interrupted out here: that alarm was swallowed
            while True:
                time.sleep(0.01)  # the repeat, 0.5 s later, stops the run

    monkeypatch.setattr(fuzz, "load_tool", lambda name: Tool)
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's, which prints (pytest's does not)
    code, err = fuzz.run_in_process("anything", [], time_limit=0.5)
    assert code is fuzz.STILL_RUNNING and reached == [True]
    assert err == ""
    assert sys.unraisablehook is sys.__unraisablehook__  # put back
