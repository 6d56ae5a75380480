"""`python -m engine.bench` (make bench)."""

from engine.bench.figures import main

raise SystemExit(main())
