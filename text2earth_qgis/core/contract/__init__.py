"""What the engine imports from the plugin (stdlib only): the zoom-level math, the scene
window plan, file placement, the GPU driver probe, the samplers' names and the prompt
library, so the two sides cannot drift apart (tests/test_architecture.py enforces it)."""
