"""One list of samplers: the engine's, and the copies the CLI, the service and the plugin use."""

from __future__ import annotations

import pytest
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from engine.errors import InputError
from engine.model.schedulers import DEFAULT_SCHEDULER, SCHEDULER_NAMES, make_scheduler

SD2_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
              "num_train_timesteps": 1000, "prediction_type": "epsilon", "steps_offset": 1}


def test_names_build_the_diffusers_schedulers():
    expected = {"euler": EulerDiscreteScheduler, "ddim": DDIMScheduler,
                "dpm++": DPMSolverMultistepScheduler}
    assert set(SCHEDULER_NAMES) == set(expected) and DEFAULT_SCHEDULER == "euler"
    for name, cls in expected.items():
        scheduler = make_scheduler(name, SD2_CONFIG)
        assert type(scheduler) is cls and scheduler.config.beta_end == 0.012
    assert make_scheduler("dpm++", SD2_CONFIG).config.algorithm_type == "dpmsolver++"
    with pytest.raises(InputError, match="euler, ddim, dpm\\+\\+"):
        make_scheduler("pndm", SD2_CONFIG)


def test_cli_service_and_plugin_offer_the_same_list():
    from engine.cli import build_parser
    from engine.service.schemas import EditJob, GenerateJob
    from text2earth_qgis.core import job_spec

    assert job_spec.SCHEDULERS == SCHEDULER_NAMES  # one list, in the plugin's stdlib contract
    assert job_spec.DEFAULT_SCHEDULER == DEFAULT_SCHEDULER
    for body in (GenerateJob, EditJob):
        field = body.model_json_schema()["properties"]["scheduler"]
        assert tuple(field["enum"]) == SCHEDULER_NAMES and field["default"] == DEFAULT_SCHEDULER
    parser = build_parser()
    for command in ("generate", "edit", "extend"):
        sub = parser._subparsers._group_actions[0].choices[command]
        action = next(a for a in sub._actions if a.dest == "scheduler")
        assert tuple(action.choices) == SCHEDULER_NAMES and action.default == DEFAULT_SCHEDULER
