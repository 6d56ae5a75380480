"""/health's `max_pixels` (the service's own limit, which the dock sizes outputs against) and
`demo_weights` (whether jobs will run on the built-in demo weights), answered by the real
handler of the service's app, before any job has loaded a model."""

from __future__ import annotations

import pytest

from engine.service.app import create_app
from engine.service.demo_status import demo_weights_expected
from engine.service.job_queue import JobQueue
from engine.service.runner import ModelManager, ServiceConfig


def health_of(config: ServiceConfig, monkeypatch) -> dict:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    queue = JobQueue(lambda job: {})
    try:
        app = create_app(queue, ModelManager(config), config)
        handler = next(route.endpoint for route in app.routes
                       if getattr(route, "path", None) == "/health")
        return handler()
    finally:
        queue.stop()


@pytest.mark.parametrize("limit", [10**6, 123_456_789])
def test_health_reports_the_services_pixel_limit(tmp_path, monkeypatch, limit):
    config = ServiceConfig(str(tmp_path / "missing"), "cpu", [tmp_path], limit)
    assert health_of(config, monkeypatch)["max_pixels"] == limit


def test_missing_weights_with_demo_fallback_means_demo_weights(tmp_path, monkeypatch):
    config = ServiceConfig(str(tmp_path / "missing"), "cpu", [tmp_path], 10**6,
                           demo_fallback=True)
    assert health_of(config, monkeypatch)["demo_weights"] is True


def test_missing_weights_without_demo_fallback_fail_instead(tmp_path, monkeypatch):
    config = ServiceConfig(str(tmp_path / "missing"), "cpu", [tmp_path], 10**6)
    assert health_of(config, monkeypatch)["demo_weights"] is False


def test_real_weights_on_this_machine_mean_no_demo(tiny_t2i, tmp_path, monkeypatch):
    config = ServiceConfig(str(tiny_t2i), "cpu", [tmp_path], 10**6, demo_fallback=True)
    assert health_of(config, monkeypatch)["demo_weights"] is False


def test_a_hub_id_not_in_the_cache_is_looked_up_locally_only(tmp_path, monkeypatch):
    # Not in the hub cache: the job would fall back, and /health says so at once (offline).
    config = ServiceConfig("text2earth-tests/never-cached", "cpu", [tmp_path], 10**6,
                           demo_fallback=True)
    assert health_of(config, monkeypatch)["demo_weights"] is True


def test_a_loaded_model_answers_for_itself(tiny_t2i):
    demo = [{"model_id": "/cache/text2earth/demo-checkpoint", "pipeline_check": True}]
    real = [{"model_id": str(tiny_t2i), "pipeline_check": False}]
    assert demo_weights_expected(False, str(tiny_t2i), demo) is True
    assert demo_weights_expected(True, "missing/model", real) is False
