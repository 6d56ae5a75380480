"""`python -m engine.bench` (make bench); `python -m engine.bench memory [--side N]`: the
memory figures of huge rasters (engine.bench.memory), also run by make bench."""

import sys

if sys.argv[1:2] == ["memory"]:
    from engine.bench.memory import main

    raise SystemExit(main(sys.argv[2:]))

from engine.bench.figures import main

raise SystemExit(main())
