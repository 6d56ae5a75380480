"""Jobs: generate, scenes, edit and extend, from request to written file."""
