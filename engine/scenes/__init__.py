"""Windowed jobs: scenes larger than one model tile (outpaint, joint, cascade) and the scratch
store every windowed job writes through.

- plan of windows: engine.geo.tiling (masks, blends), engine.scenes.window_batch (wavefronts,
  batch sizes), engine.scenes.ladder (the cascade's levels);
- files: engine.scenes.folder (the output folder held by fd: durable renames, swap check),
  engine.scenes.lock (one run per output), engine.scenes.state (names, fingerprint,
  journal), engine.scenes.store (the scratch raster with its redo file and journal);
- methods: engine.scenes.outpaint, engine.scenes.joint, engine.scenes.cascade, run by
  engine.scenes.run.
"""
