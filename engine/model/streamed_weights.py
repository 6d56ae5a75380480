"""Loading a model part's safetensors one tensor at a time, cast as it arrives.

Why: diffusers' and transformers' loaders hold a whole file's tensors (memory-mapped pages
count as resident) beside the model they convert them into, so a 1.7 GB fp16 UNet loaded
as bf16 peaks at twice its size, and the service's peak RSS at ~4.6 GB for a 2.6 GB model.
Here the part is built empty (no memory: accelerate's ``init_empty_weights``), each tensor is
read from the file, cast to the part's dtype and put in place, and the file is reopened every
:data:`REMAP_BYTES` so the pages already read leave the resident set: the peak stays at
the model plus one window of the file.

Only a part whose files match it exactly (the file names the libraries themselves load, the
same tensor names, no conversions) is streamed; anything else (legacy names, variants, extra
keys) returns None and the caller uses the library's own loader, which knows those cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Tensors read between reopenings of a file (its pages read so far leave the resident set).
REMAP_BYTES = 32 << 20
# The file (or shard index) names each library loads by default, in its order of preference.
WEIGHT_NAMES = {
    "diffusers": ("diffusion_pytorch_model.safetensors",
                  "diffusion_pytorch_model.safetensors.index.json"),
    "transformers": ("model.safetensors", "model.safetensors.index.json"),
}


def weight_files(folder: Path, library: str) -> list[Path] | None:
    """The safetensors files ``library`` would load from ``folder`` (shards in index order),
    or None where it has none of its default names."""
    single, index = (folder / name for name in WEIGHT_NAMES[library])
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        shards = list(dict.fromkeys(weight_map.values()))
        files = [folder / name for name in shards]
        return files if all(f.is_file() for f in files) else None
    return None


def _empty_part(model_class, folder: Path) -> tuple[torch.nn.Module, str]:
    """The part built on the meta device from its config (buffers real: some are computed in
    ``__init__`` and never stored), its random initialisation skipped (a third of the load's
    time, spent on tensors about to be replaced), and which library it comes from."""
    from accelerate import init_empty_weights

    if hasattr(model_class, "load_config"):  # diffusers' ConfigMixin
        from diffusers.models.modeling_utils import no_init_weights

        config, library = model_class.load_config(folder), "diffusers"
        with init_empty_weights(include_buffers=False), no_init_weights():
            return model_class.from_config(config), library
    from transformers.initialization import no_init_weights

    config = model_class.config_class.from_pretrained(folder)
    with init_empty_weights(include_buffers=False), no_init_weights():
        return model_class(config), "transformers"


def _names_by_file(files: list[Path]) -> dict[Path, list[str]] | None:
    from safetensors import safe_open

    names: dict[Path, list[str]] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                names[file] = list(handle.keys())
        except Exception:  # noqa: BLE001 - unreadable here: the library's loader will say why
            return None
    return names


def load_streamed(model_class, folder: Path, dtype: torch.dtype) -> torch.nn.Module | None:
    """``model_class`` (a diffusers or transformers model) from the safetensors in ``folder``,
    every tensor in ``dtype`` (modules the class keeps in fp32 stay fp32), in eval mode; None
    where the folder's files do not match the model exactly (see the module's docstring)."""
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    model, library = _empty_part(model_class, folder)
    files = weight_files(folder, library)
    names = _names_by_file(files) if files else None
    if names is None:
        return None
    expected = set(model.state_dict())
    stored = [name for file_names in names.values() for name in file_names]
    if len(stored) != len(set(stored)) or set(stored) != expected:
        return None
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for file, file_names in names.items():
        pending = list(file_names)
        while pending:
            with safe_open(file, framework="pt") as handle:  # closed: the pages read leave
                read = 0
                while pending and read < REMAP_BYTES:
                    name = pending.pop(0)
                    tensor = handle.get_tensor(name)  # backed by the file's mapping
                    read += tensor.numel() * tensor.element_size()
                    target = tensor.dtype
                    if tensor.is_floating_point():
                        in_fp32 = any(f".{m}." in f".{name}" for m in keep_fp32)
                        target = torch.float32 if in_fp32 else dtype
                    # A copy of its own: ``to`` returns the mapped tensor itself when the
                    # dtype already matches, which would keep the pages resident.
                    value = tensor.to(target, copy=True)
                    del tensor
                    set_module_tensor_to_device(model, name, "cpu", value=value, dtype=target)
    return model.eval()
