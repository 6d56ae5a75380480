"""`python -m engine.bench` (make bench); `python -m engine.bench memory [--side N]`: the
memory figures of huge rasters (engine.bench.memory), also run by make bench;
`python -m engine.bench gpu [--smoke]` (make bench-gpu): the GPU figures (engine.bench.gpu)."""

import sys

if sys.argv[1:2] == ["memory"]:
    from engine.bench.memory import main

    raise SystemExit(main(sys.argv[2:]))

if sys.argv[1:2] == ["gpu"]:
    from engine.bench.gpu import main

    raise SystemExit(main(sys.argv[2:]))

from engine.bench.figures import main

raise SystemExit(main())
