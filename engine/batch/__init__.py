"""Batch generation: many items into COGs + a STAC catalog, in-process or on Ray (local or a
cluster), and one huge outpainted scene spread over Ray workers (engine.batch.scene_split)."""
