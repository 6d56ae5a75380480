"""One model built at a time in a process: accelerate's init_empty_weights (diffusers' and
transformers' low-memory loading) patches torch.nn.Module for every thread, so a module made in
another thread meanwhile (the demo checkpoint written at a job's submit while the service
preloads) got meta tensors: "Cannot copy out of meta tensor". The streamed loader's
``no_init_weights`` (torch.nn.init patched to do nothing) is process-wide too: every builder
of a model (the generation model, the rank model, the demo checkpoint) takes this lock."""

import functools
import threading

BUILDING = threading.RLock()


def building_one_at_a_time(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with BUILDING:
            return function(*args, **kwargs)

    return wrapper
