"""One model built at a time in a process: accelerate's init_empty_weights (diffusers' and
transformers' low-memory loading) patches torch.nn.Module for every thread, so a module made in
another thread meanwhile (the demo checkpoint written at a job's submit while the service
preloads) got meta tensors: "Cannot copy out of meta tensor"."""

import functools
import threading

BUILDING = threading.RLock()


def building_one_at_a_time(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with BUILDING:
            return function(*args, **kwargs)

    return wrapper
