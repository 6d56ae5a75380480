"""Installing what the engine needs (stdlib only): its own virtual environment and the
model weights, and what the set-up will do, said before it starts."""
