"""A UNet compiled for one input shape on a CPU, eager for every other.

torch.compile with ``dynamic=False`` compiles again for each new input shape, and on a CPU
one compile of the full UNet takes minutes (2.5 min on 2 cores): a scene's batched windows,
a 512 px window or an inpainting pass after a 256 px job would each stall a job that long.
So the compiled graph serves the first shape it is called with (the service's warm-up: one
256 px window with guidance, what a single image runs), and any other shape runs the same
weights eagerly, as fast as without compiling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class FirstShapeCompiled(torch.nn.Module):
    """Stands in for the UNet (same call, same attributes: config, dtype, device, ...)."""

    def __init__(self, unet: torch.nn.Module, compiled: Callable,
                 on_compiled: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.eager = unet
        # Not a registered submodule: it wraps ``unet`` itself (the weights are not doubled).
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_on_compiled", on_compiled)
        object.__setattr__(self, "compiled_shape", None)

    def forward(self, sample: torch.Tensor, *args, **kwargs):
        shape = (tuple(sample.shape), sample.dtype, sample.device)
        if self.compiled_shape is None:
            out = self._compiled(sample, *args, **kwargs)  # compiles (minutes, once)
            object.__setattr__(self, "compiled_shape", shape)
            if self._on_compiled is not None:
                self._on_compiled()
            return out
        if shape == self.compiled_shape:
            return self._compiled(sample, *args, **kwargs)
        return self.eager(sample, *args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.eager, name)
