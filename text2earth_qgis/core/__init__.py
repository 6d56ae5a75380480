"""Stdlib-only logic of the plugin, testable without QGIS.

The engine imports from here only the modules named in ENGINE_CONTRACT (tests/test_architecture
enforces it): the shared zoom-level math, the scene window plan, file placement, the GPU
driver probe and the samplers' names, so the two sides cannot drift apart and the engine
never depends on the rest.
"""

ENGINE_CONTRACT = ("scale", "tiles", "files", "gpu_driver", "samplers", "prompt_library")
