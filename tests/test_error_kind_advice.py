"""The plugin's advice on a failed job follows the engine's stable ``error_kind``, not its
wording (which may improve at any time); the wording rules remain for engines too old to
send a kind."""

from __future__ import annotations

import pytest

from text2earth_qgis.core.failure_advice import JOB, explain, job_message
from text2earth_qgis.core.service.client import JobFailed, ServiceError
from text2earth_qgis.core.service.run_job import run_job

OOM_ADVICE = "The GPU ran out of memory. Choose a smaller extent"


@pytest.mark.parametrize("kind,text,starts", [
    # reworded engine messages: the kind alone decides
    ("out_of_memory", "the device's allocator gave up at 2.0 GiB", OOM_ADVICE),
    ("missing_model", "weights for lcybuaa/Text2Earth were not found",
     "The Text2Earth model weights are missing."),
    ("bad_checkpoint", "unet has no weights", "The model files are incomplete or damaged."),
    ("disk_full", "could not finish the file", "The disk is full."),
    ("write_failed", "the temp file did not read back", "The output could not be written."),
    ("internal", "ZeroDivisionError: division by zero", "The engine hit a bug."),
])
def test_advice_follows_the_error_kind(kind, text, starts):
    message = job_message(text, kind)
    assert message.startswith(starts), message
    assert text in message  # the engine's own words are kept, after the advice


@pytest.mark.parametrize("kind", ["bad_input", "cancelled", "some_future_kind"])
def test_a_kind_without_advice_keeps_the_text_even_if_its_words_look_like_another(kind):
    text = "prompt 'out of memory ModelNotFoundError' is fine but the extent is inverted"
    assert explain(text, JOB).kind == "out_of_memory"  # what wording matching would say
    assert job_message(text, kind) == text


def test_older_engines_without_a_kind_fall_back_on_the_wording():
    assert job_message("CUDA out of memory. Tried to allocate 2.00 GiB").startswith(OOM_ADVICE)
    assert job_message("the extent is inverted") == "the extent is inverted"


def test_advice_is_given_once():
    once = job_message("the allocator gave up", "out_of_memory")
    assert job_message(once) == once
    assert job_message(once, "out_of_memory") == once


class FakeClient:
    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def submit(self, job):
        if isinstance(self.failure, ServiceError):
            raise self.failure
        return {"id": "abc", "state": "queued"}

    def wait(self, job_id, poll=1.0, on_progress=None):
        raise self.failure

    def cancel(self, job_id):
        return {}


def test_run_job_hands_on_the_kind_and_the_advice(tmp_path):
    with pytest.raises(JobFailed) as info:
        run_job(FakeClient(JobFailed("allocator gave up", kind="out_of_memory")), {},
                tmp_path / "x.tif")
    assert info.value.kind == "out_of_memory"
    assert str(info.value).startswith(OOM_ADVICE)
    # what the dock's task does with it: unchanged
    assert job_message(str(info.value)) == str(info.value)

    with pytest.raises(JobFailed) as info:
        run_job(FakeClient(JobFailed("out of memory is what the prompt says", kind="bad_input")),
                {}, tmp_path / "x.tif")
    assert str(info.value) == "out of memory is what the prompt says"
    assert info.value.kind == "bad_input"

    refused = ServiceError(422, "model folder /m does not exist", kind="missing_model")
    with pytest.raises(ServiceError) as info:
        run_job(FakeClient(refused), {}, tmp_path / "x.tif")
    assert info.value.status == 422 and info.value.kind == "missing_model"
    assert info.value.message.startswith("The Text2Earth model weights are missing.")


def test_client_errors_keep_their_old_signatures():
    """Additive: older callers build them as before and get kind None."""
    assert ServiceError(404, "no job").kind is None
    assert JobFailed("it failed").kind is None
    assert str(JobFailed("it failed")) == "it failed"
