"""A UNet compiled once on a CPU, for its first call's inputs; any later call those compiled
graphs do not fit runs eagerly instead of compiling again.

torch.compile with ``dynamic=False`` compiles again for each new input shape or dtype, and on
a CPU one compile of the full UNet takes minutes (2.5 min on 2 cores): a scene's batched
windows, a 512 px window, another scheduler's integer timesteps would each stall a job that
long. So the first call (the service's warm-up: one 256 px window with guidance, what a
single image runs) compiles, and later calls run under dynamo's ``eager_on_recompile``
stance: the compiled graph where its guards hold, the same weights eagerly where they do not.

The compile itself runs with inductor's freezing switched on (``config``): the weights become
constants, so oneDNN packs the convolutions' and linears' weights once. Freezing must be on
when dynamo hands the graph over, which ``torch.compile(options=...)`` is too late for (the
step stayed at 1.6 s); the config patch around the first call is not.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch


class CompiledOnce(torch.nn.Module):
    """Stands in for the UNet (same call, same attributes: config, dtype, device, ...)."""

    def __init__(self, unet: torch.nn.Module, compiled: Callable, config: dict | None = None,
                 on_compiled: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.eager = unet
        # Plain attributes, not submodules: ``compiled`` wraps ``unet`` itself (no second copy
        # of the weights in parameters() or state_dict()).
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_config", dict(config or {}))
        object.__setattr__(self, "_on_compiled", on_compiled)
        object.__setattr__(self, "state", "not compiled")  # then "compiled" or "failed: ..."

    def forward(self, *args, **kwargs):
        if self.state == "compiled":
            with torch.compiler.set_stance("eager_on_recompile"):
                return self._compiled(*args, **kwargs)
        if self.state != "not compiled":
            return self.eager(*args, **kwargs)
        import torch._inductor.config as inductor_config

        try:
            with inductor_config.patch(self._config):
                out = self._compiled(*args, **kwargs)  # compiles (minutes, once)
        except Exception as exc:  # noqa: BLE001 - no C++ compiler, inductor bug: eager it is
            object.__setattr__(self, "state", f"failed: {type(exc).__name__}")
            print(f"text2earth: compiling the UNet failed ({type(exc).__name__}: "
                  f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); "
                  "running it uncompiled", file=sys.stderr, flush=True)
            return self.eager(*args, **kwargs)
        object.__setattr__(self, "state", "compiled")
        if self._on_compiled is not None:
            self._on_compiled()
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.eager, name)
