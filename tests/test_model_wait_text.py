"""Issue 24, goal 2: the dock says what a job waits for before its first step ("loading the
model, 6 s", "compiling for this machine, once ..."). The engine reports the facts
(engine.service.model_phase), the plugin's core words them (run_job.model_wait_text); no Qt."""

from __future__ import annotations

import pytest

from engine.service.job_queue import RUNNING, Job
from engine.service.model_phase import COMPILING, LOADING, READY, ModelPhase, compile_once
from text2earth_qgis.core.service.run_job import model_wait_text, status_text

ONCE = "compiling for this machine, {} (first start only; a few minutes)"


@pytest.mark.parametrize("state, text", [
    ({"phase": "loading", "seconds": 6.2, "once": None}, "loading the model, 6 s"),
    ({"phase": "loading", "seconds": 0.0, "once": None}, "loading the model, 0 s"),
    ({"phase": "compiling", "seconds": 40.4, "once": True}, ONCE.format("40 s")),
    ({"phase": "compiling", "seconds": 150, "once": True}, ONCE.format("2 min")),  # 2.5 min
    ({"phase": "compiling", "once": True},
     "compiling for this machine (first start only; a few minutes)"),
    ({"phase": "compiling", "seconds": 3, "once": False},
     "compiling from this machine's cache, 3 s"),
    ({"phase": "compiling", "seconds": 12, "once": None},
     "compiling the model for this machine, 12 s"),
    ({"phase": "loading"}, "loading the model"),  # no seconds: no number made up
    ({"phase": "loading", "seconds": None}, "loading the model"),
    ({"phase": "loading", "seconds": float("nan")}, "loading the model"),
    ({"phase": "loading", "seconds": float("inf")}, "loading the model"),
    ({"phase": "loading", "seconds": "6"}, "loading the model"),
])
def test_each_phase_in_words(state, text):
    assert model_wait_text(state) == text


@pytest.mark.parametrize("state", [
    None, {}, "loading", {"phase": None, "seconds": None, "once": None},
    {"phase": "ready", "seconds": 3.0, "once": None}, {"phase": "failed", "seconds": 1.0},
    {"phase": "defragmenting", "seconds": 5},  # a newer engine's phase: nothing invented
])
def test_nothing_to_wait_for_says_nothing(state):
    assert model_wait_text(state) == ""


def running(step=0, waiting=None, **extra) -> dict:
    return {"state": "running", "step": step, "steps": 50, "tile": 1, "tiles": 1,
            "eta_s": None, "queue_position": None, "waiting_for_model": waiting, **extra}


def test_the_status_line_says_the_wait_instead_of_step_0():
    assert status_text(running()) == "running: step 0 of 50"
    loading = {"phase": "loading", "seconds": 6.0, "once": None}
    assert status_text(running(waiting=loading)) == "loading the model, 6 s"
    # An engine from before the field: the line it always had.
    old = running()
    del old["waiting_for_model"]
    assert status_text(old) == "running: step 0 of 50"
    # Only a running job waits for the model; a queued one waits for its turn.
    queued = {**running(waiting=loading), "state": "queued", "queue_position": 2}
    assert status_text(queued) == "queued (position 2)"


def test_the_engines_job_status_reads_as_the_wait():
    """The engine's own Job.status, fed by a ModelPhase as the ModelManager keeps it, is
    what the plugin words: the two sides agree on the field names."""
    phase = ModelPhase.begin(COMPILING, compile_once({"compiled": True, "compile_cached": False}))
    clock = [phase.since]
    job = Job("generate", object(), steps=50, state=RUNNING)
    job.model_wait = lambda: phase.describe(now=clock[0]) if phase.waiting else None
    clock[0] += 40.0
    status = job.status()
    assert status["waiting_for_model"] == {"phase": "compiling", "seconds": 40.0, "once": True}
    assert status_text(status) == ONCE.format("40 s")
    clock[0] += 95.0
    assert status_text(job.status()) == ONCE.format("2 min")  # 135 s
    phase = ModelPhase.begin(READY)
    assert job.status()["waiting_for_model"] is None
    assert status_text(job.status()) == "running: step 0 of 50"


@pytest.mark.parametrize("speed, once", [
    ({"compiled": True, "compile_cached": False}, True),
    ({"compiled": True, "compile_cached": True}, False),
    ({"compiled": True}, None),  # a speed report from before the field
    ({"compiled": False, "compile_cached": None}, None),
    (None, None),
])
def test_once_follows_the_compile_cache(speed, once):
    assert compile_once(speed) is once


def test_a_phase_reports_its_seconds_from_its_own_start():
    phase = ModelPhase.begin(LOADING)
    assert phase.describe(now=phase.since + 6.04) == {"phase": "loading", "seconds": 6.0,
                                                       "once": None}
    assert ModelPhase().describe() == {"phase": None, "seconds": None, "once": None}
    assert not ModelPhase().waiting and not ModelPhase.begin(READY).waiting
