"""Stdlib-only logic of the plugin, testable without QGIS, in four parts:

- ``contract/``: what the engine imports (the zoom-level math, the scene window plan, file
  placement, the GPU driver probe, the samplers' names, the prompt library): one copy, so the
  two sides cannot drift apart; tests/test_architecture.py holds the engine to it;
- ``service/``: the engine service from the plugin's side (start, reach, stop, the client,
  a job from submit to the delivered file);
- ``setup/``: installing the engine's environment and the model weights;
- the modules here: the plugin's own logic (job and edit specs, output plans, names, history).
"""
