"""The model: pipelines, weights, device and precision, speed switches, demo weights."""
