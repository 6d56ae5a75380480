"""The samplers a job may name, and the default: one list for the dock, Processing, the CLI,
the service and the pipeline (the engine imports it: part of core/contract). Stdlib only."""

SCHEDULERS = ("euler", "ddim", "dpm++")
DEFAULT_SCHEDULER = "euler"  # the authors' choice in their examples
