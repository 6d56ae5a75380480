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


def _renamer(model, meta_state: dict):
    """transformers' own renaming of stored tensor names to the model's (its conversion
    mapping: e.g. transformers 5's CLIPTextModel dropped the ``text_model.`` prefix that every
    checkpoint saved before it has); None where the model's mapping also merges or splits
    tensors (its loader's job) or the library's internals are not what this expects."""
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import WeightRenaming, rename_source_key

        transforms = get_model_conversion_mapping(model)
    except Exception:  # noqa: BLE001 - another transformers: its own loader then
        return None
    if any(not isinstance(t, WeightRenaming) for t in transforms):
        return None
    prefix = getattr(model, "base_model_prefix", None) or None

    def rename(name: str) -> str:
        return rename_source_key(name, transforms, [], prefix, meta_state)[0]

    return rename


def load_streamed(model_class, folder: Path, dtype: torch.dtype) -> torch.nn.Module | None:
    """``model_class`` (a diffusers or transformers model) from the safetensors in ``folder``,
    every tensor in ``dtype`` (modules the class keeps in fp32 stay fp32), in eval mode; None
    where the folder's files do not match the model exactly (see the module's docstring)."""
    from accelerate.utils import set_module_tensor_to_device
    from safetensors import safe_open

    try:
        model, library = _empty_part(model_class, folder)
    except ImportError:  # a library version without the helpers used: its own loader then
        return None
    files = weight_files(folder, library)
    names = _names_by_file(files) if files else None
    if names is None:
        return None
    meta_state = model.state_dict()
    rename = _renamer(model, meta_state) if library == "transformers" else (lambda name: name)
    if rename is None:
        return None
    targets = {file: {name: rename(name) for name in file_names}
               for file, file_names in names.items()}
    # Buffers the model builds itself but older versions stored (CLIP's position ids, saved
    # by transformers before 4.31) are skipped, as the libraries skip them.
    built = {name for name, _ in model.named_buffers()} - set(meta_state)
    kept = [target for renamed in targets.values() for target in renamed.values()
            if target not in built]
    if len(kept) != len(set(kept)) or set(kept) != set(meta_state):
        return None
    keep_fp32 = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    for file, renamed in targets.items():
        pending = [(name, target) for name, target in renamed.items() if target not in built]
        while pending:
            with safe_open(file, framework="pt") as handle:  # closed: the pages read leave
                read = 0
                while pending and read < REMAP_BYTES:
                    stored_name, name = pending.pop(0)
                    tensor = handle.get_tensor(stored_name)  # backed by the file's mapping
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
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    for module in model.modules():  # built float buffers follow the dtype, as the libraries'
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[key] = buffer.to(dtype)
    return model.eval()
