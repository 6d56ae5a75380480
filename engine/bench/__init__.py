"""`make bench`: engine overhead, precisions, scenes, memory (not part of the engine's
runtime; nothing in engine/ imports it)."""
