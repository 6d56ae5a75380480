"""An output folder that cannot take the result: said before the job is sent, in the user's
words, naming the folder; a delivery that fails anyway says why and leaves no partial file
(the engine's own copy stays, and the message names it). And result names that meet an
existing file: one pipeline-check tag, the counter before it. Stdlib core against
tests/fake_service.py.

The read-only folders are real: as root (the test machine), chmod does not stop writes, so a
read-only tmpfs is mounted where the kernel allows it (EROFS); as another user, chmod 0o555
(EACCES). A path under a file (ENOTDIR) fails for everyone. A full disk is a 64 KiB tmpfs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tmpfs
from fake_service import FakeService

from text2earth_qgis.core.candidates import Candidate, candidate_paths
from text2earth_qgis.core.contract.files import OutputFolderError, check_output_folder, unused_name
from text2earth_qgis.core.job_spec import (
    PIPELINE_CHECK_TAG,
    Extent,
    Resolution,
    build_job,
    pipeline_check_name,
)
from text2earth_qgis.core.service.client import DeliveryError, EngineClient
from text2earth_qgis.core.service.run_job import run_candidates, run_job

JOB = build_job(Extent(447000, 5411000, 447300, 5411300, "EPSG:32632"), "a village",
                Resolution("level", 16), seed=3, steps=2)
DEMO_TAGS = {PIPELINE_CHECK_TAG: "yes: random demo weights, not imagery"}


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with tmpfs(folder, "ro,size=1m"):
        yield folder


def test_a_writable_folder_passes_and_is_made_when_missing(tmp_path):
    folder = tmp_path / "new" / "results"
    assert check_output_folder(folder) == folder
    assert folder.is_dir() and list(folder.iterdir()) == []  # the test file is gone


def test_a_read_only_folder_is_named_with_the_fix(read_only_folder):
    with pytest.raises(OutputFolderError) as caught:
        check_output_folder(read_only_folder)
    assert str(caught.value) == (f"Cannot write to {read_only_folder}: it is read-only. "
                                 "Choose another output folder.")
    with pytest.raises(OutputFolderError, match="it is read-only"):
        check_output_folder(read_only_folder / "sub")  # cannot be created there either


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "report.txt").write_text("x")
    for folder in (tmp_path / "report.txt", tmp_path / "report.txt" / "out"):
        with pytest.raises(OutputFolderError) as caught:
            check_output_folder(folder)
        assert str(caught.value).startswith(f"Cannot write to {folder}: ")
        assert str(caught.value).endswith("Choose another output folder.")


def test_run_job_refuses_before_the_job_is_sent(tmp_path, read_only_folder):
    with FakeService(tmp_path / "staging") as service:
        with pytest.raises(DeliveryError, match=f"Cannot write to {read_only_folder}: it is "
                                                "read-only"):
            run_job(EngineClient(service.url), JOB, read_only_folder / "scene.tif")
        with pytest.raises(DeliveryError, match="it is read-only"):
            run_candidates(EngineClient(service.url), {**JOB, "candidates": 2},
                           lambda kept, check: [], folder=read_only_folder)
    assert service.jobs == []  # nothing was generated for nowhere


def assert_said_and_kept(said: str, message: str, staging: Path, remote: bool) -> None:
    """The failure in the user's words; a local engine's file is not lost: it stays where the
    engine wrote it, and the message names it."""
    if remote:
        assert said == message
    else:
        [kept] = staging.iterdir()
        assert said == f"{message} The result is kept at {kept}."


@pytest.mark.parametrize("remote", [False, True])
def test_a_failed_delivery_says_why_and_leaves_nothing(tmp_path, read_only_folder, remote):
    staging = tmp_path / "staging"
    with FakeService(staging, remote=remote) as service:
        client = EngineClient(service.url)
        job_id = client.submit(JOB)["id"]
        with pytest.raises(DeliveryError) as caught:
            client.download(job_id, read_only_folder / "scene.tif")
    message = (f"Cannot write to {read_only_folder}: it is read-only. "
               "Choose another output folder.")
    assert list(read_only_folder.iterdir()) == []
    assert_said_and_kept(str(caught.value), message, staging, remote)


@pytest.mark.parametrize("remote", [False, True])
def test_a_full_disk_is_said_and_leaves_no_partial_file(tmp_path, remote):
    staging = tmp_path / "staging"

    def big_file(job, index, path):
        path.write_bytes(os.urandom(256 * 1024))  # more than the 64 KiB disk holds

    with tmpfs(tmp_path / "small", "size=64k") as small:
        with FakeService(staging, remote=remote, make_file=big_file) as service:
            client = EngineClient(service.url)
            job_id = client.submit(JOB)["id"]
            with pytest.raises(DeliveryError) as caught:
                client.download(job_id, small / "scene.tif")
        message = (f"Cannot write to {small}: the disk is full. Free some space, or choose "
                   "another output folder.")
        assert list(small.iterdir()) == []
    assert_said_and_kept(str(caught.value), message, staging, remote)


# ----- names that meet existing files ------------------------------------------------------

def test_the_pipeline_check_tag_is_applied_once_with_the_counter_before_it():
    taken = {"x_s1.pipeline-check.tif", "x_s1_2.pipeline-check.tif"}
    assert unused_name("x_s1.pipeline-check.tif", taken.__contains__) == \
        "x_s1_3.pipeline-check.tif"
    assert unused_name("x_s1.tif", {"x_s1.tif"}.__contains__) == "x_s1_2.tif"
    assert unused_name("notes", {"notes"}.__contains__) == "notes_2"
    assert pipeline_check_name("x_s1_2.tif") == "x_s1_2.pipeline-check.tif"
    for tagged in ("x_s1_2.pipeline-check.tif", "x_s1.pipeline-check_2.tif"):  # the latter: old
        assert pipeline_check_name(tagged) == tagged


def test_a_demo_result_meeting_earlier_ones_gets_the_next_free_name(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("v_s7.pipeline-check.tif", "v_s7_2.pipeline-check.tif"):
        (out / name).write_bytes(b"older")
    with FakeService(tmp_path / "staging", tags=DEMO_TAGS) as service:
        client = EngineClient(service.url)
        # As the dock asks when it knows the weights are the demo's, and when it does not.
        _, asked_tagged = run_job(client, JOB, out / "v_s7_3.pipeline-check.tif")
        _, asked_plain = run_job(client, JOB, out / "v_s7.tif")
    assert asked_tagged.name == "v_s7_3.pipeline-check.tif"
    assert asked_plain.name == "v_s7_4.pipeline-check.tif"
    assert sorted(p.name for p in out.iterdir()) == [
        "v_s7.pipeline-check.tif", "v_s7_2.pipeline-check.tif", "v_s7_3.pipeline-check.tif",
        "v_s7_4.pipeline-check.tif"]


def test_variations_meeting_each_other_and_a_file_count_up_once(tmp_path):
    (tmp_path / "20260101_a-village_s5.pipeline-check.tif").write_bytes(b"older")
    same_seed = [Candidate(1, 5, None, None), Candidate(2, 5, None, None)]
    from datetime import datetime

    paths = candidate_paths(tmp_path, "{date}_{prompt}_s{seed}.tif", "a village", 16,
                            same_seed, pipeline_check=True, when=datetime(2026, 1, 1))
    assert [p.name for p in paths] == ["20260101_a-village_s5_2.pipeline-check.tif",
                                       "20260101_a-village_s5_3.pipeline-check.tif"]
