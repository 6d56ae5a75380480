"""Find and load Text2Earth weights: a local diffusers folder or a Hugging Face hub id.

Safetensors only, and no code that came with a checkpoint is ever run: the hub repos carry
the authors' custom pipeline files, which we neither download nor import; the pipeline is
our own (engine.model.pipeline) and only the weights are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import CheckpointError, InputError, ModelNotFoundError
from engine.model.construction_lock import building_one_at_a_time
from engine.model.device import select_device
from engine.model.user_cache import text2earth_cache

DEFAULT_MODEL = "lcybuaa/Text2Earth"
INPAINTING_MODEL = "lcybuaa/Text2Earth-inpainting"
MODEL_ENV = "TEXT2EARTH_MODEL"
WEIGHT_FOLDERS = ("unet", "vae", "text_encoder")
REQUIRED_FOLDERS = WEIGHT_FOLDERS + ("tokenizer", "scheduler")
HUB_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HASH_CHUNK = 1 << 22


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    model_id: str  # what the user asked for: a hub id or the folder
    source: str  # "local folder", "hub cache", "hub download"


def missing_model_advice(model_id: str) -> str:
    return (
        f"The Text2Earth weights ({model_id}) are not on this machine and could not be "
        "downloaded (offline, or the hub is unreachable). To use the real model, download it "
        f"once where there is internet, e.g. `hf download {model_id} "
        "--include '*.json' '*.txt' '*.safetensors'`, which fills the Hugging Face cache "
        "(~/.cache/huggingface/hub; copy that folder here), or copy the model folder anywhere "
        f"and pass it with `--model /path/to/Text2Earth` or the environment variable {MODEL_ENV}."
    )


def is_local_path(spec: str) -> bool:
    """An existing path, or one that cannot be a hub id (absolute, ./, ~, a/b/c)."""
    return (
        Path(spec).expanduser().exists()
        or spec.startswith(("/", ".", "~"))
        or not HUB_ID.match(spec)
        and ("/" in spec or os.sep in spec)
    )


def check_folder(path: Path) -> None:
    """A clear error for a folder that is not a complete safetensors diffusers checkpoint."""
    if not path.is_dir():
        raise ModelNotFoundError(f"model folder {path} does not exist")
    if not (path / "model_index.json").is_file():
        raise CheckpointError(
            f"{path} is not a diffusers model folder: model_index.json is missing"
        )
    try:
        json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}/model_index.json is unreadable: {exc}") from None
    missing = [sub for sub in REQUIRED_FOLDERS if not (path / sub).is_dir()]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    for sub in WEIGHT_FOLDERS:
        if not any((path / sub).glob("*.safetensors")):
            pickle_suffixes = (".bin", ".ckpt", ".pt")
            pickles = [p.name for p in (path / sub).glob("*") if p.suffix in pickle_suffixes]
            if pickles:
                raise CheckpointError(
                    f"{path}/{sub} has only pickle weights ({', '.join(pickles)}); the engine "
                    "loads safetensors only, since pickle files can run code: convert them to "
                    ".safetensors first"
                )
            raise CheckpointError(f"{path}/{sub} has no .safetensors weights")


def resolve_checkpoint(
    model: str | None = None, offline: bool | None = None, cache_dir: str | Path | None = None
) -> Checkpoint:
    """--model, else $TEXT2EARTH_MODEL, else the hub id: local folder, hub cache, download.

    ``cache_dir`` is a Hugging Face hub cache (default: the user's, shared with other tools).
    """
    spec = (model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL).strip()
    if is_local_path(spec):
        path = Path(spec).expanduser().resolve()
        check_folder(path)
        return Checkpoint(path, str(path), "local folder")
    if not HUB_ID.match(spec):
        raise InputError(
            f"--model {spec!r} is neither an existing folder nor a hub id (owner/name)"
        )

    path, source = hub_snapshot(spec, HUB_PATTERNS, missing_model_advice(spec), offline,
                                cache_dir)
    check_folder(path)
    return Checkpoint(path, spec, source)


def hub_snapshot(spec: str, patterns: list[str], advice: str, offline: bool | None,
                 cache_dir: str | Path | None) -> tuple[Path, str]:
    """(folder, "hub cache" | "hub download") of hub id ``spec``, only files matching
    ``patterns`` (configs, tokenizers, safetensors: never code); ModelNotFoundError with
    ``advice`` when the cache lacks it and it cannot (or may not) be downloaded."""
    from huggingface_hub import snapshot_download

    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(  # nosec B615 - only `patterns` (configs, tokenizers, safetensors); no hub code is ever run
            spec, allow_patterns=patterns, local_files_only=True, cache_dir=cache_dir
        )), "hub cache"
    except Exception:  # noqa: BLE001 - any miss in the cache means "not cached"
        if offline:
            raise ModelNotFoundError(advice) from None
    try:
        return Path(snapshot_download(  # nosec B615 - only `patterns`, as above
            spec, allow_patterns=patterns, cache_dir=cache_dir)), "hub download"
    except Exception as exc:  # noqa: BLE001 - offline, DNS, 404, gated: one message for all
        raise ModelNotFoundError(f"{advice} (hub said: {type(exc).__name__})") from None


def _hash_memo_path() -> Path:
    return text2earth_cache() / "weights-sha256.json"


def _file_sha256(path: Path) -> str:
    real = path.resolve()
    # The hub cache names each blob after the sha256 of its content: no need to read 3 GB.
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name
    # Elsewhere (a model folder) a file's hash is remembered with its identity: reading 3.4 GB
    # took ~3 s of every start, before the first image.
    info = real.stat()
    # st_ctime_ns: on POSIX the inode's change time, which copying tools cannot set back.
    identity = [info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_ctime_ns]
    memo_path = _hash_memo_path()
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    entry = memo.get(str(real)) if isinstance(memo, dict) else None
    if isinstance(entry, list) and len(entry) == len(identity) + 1 and entry[:-1] == identity:
        return entry[-1]
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    sha = digest.hexdigest()
    memo = {name: entry for name, entry in (memo if isinstance(memo, dict) else {}).items()
            if os.path.exists(name)}  # models deleted since: forgotten
    memo[str(real)] = [*identity, sha]
    tmp = memo_path.with_name(f".{memo_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:  # best effort, atomic: a torn or lost memo only means hashing again
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    except OSError:
        tmp.unlink(missing_ok=True)
    return sha


def weights_sha256(path: Path) -> str:
    """One hash over every safetensors file of the checkpoint (names and contents): those in
    its subfolders (diffusers) and at its top (transformers: the rank model)."""
    digest = hashlib.sha256()
    for file in sorted([*path.glob("*.safetensors"), *path.glob("*/*.safetensors")]):
        digest.update(f"{file.relative_to(path).as_posix()}:{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


@dataclass
class LoadedModel:
    pipeline: object  # Text2EarthPipeline (typed loosely: importing it pulls in diffusers)
    checkpoint: Checkpoint
    weights_sha256: str
    device: torch.device
    dtype: torch.dtype  # the UNet's
    pipeline_check: bool = False  # the built-in demo weights: output is a plumbing test
    precision: str = "fp32"  # engine.model.precision: fp32 | bf16 | fp16
    speed: dict | None = None  # engine.model.accelerate's report: compiled, memory savers, ...
    compile_key: str | None = None  # engine.model.compile_cache: this model compiled here

    @property
    def inpainting(self) -> bool:
        return self.pipeline.unet.config.in_channels == 9


def _load_part(what: str, loader, path: Path, **kwargs):
    try:
        return loader(path, subfolder=what, **kwargs)
    except Exception as exc:  # noqa: BLE001 - corrupt or mismatched files: say which part
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"could not load {what} from {path}: {type(exc).__name__}: {first_line[:300]}"
        ) from None


def _load_weights(what: str, model_class, path: Path, dtype: torch.dtype):
    """A weight part streamed tensor by tensor (engine.model.streamed_weights: the file is never
    resident beside the converted model), else through its library's own loader."""
    from engine.model.streamed_weights import load_streamed

    part = _load_part(what, lambda folder, subfolder: load_streamed(
        model_class, folder / subfolder, dtype), path)
    if part is not None:
        return part
    return _load_part(what, model_class.from_pretrained, path, use_safetensors=True,
                      torch_dtype=dtype)


@building_one_at_a_time
def load_model(
    model: str | None = None,
    device: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    checkpoint: Checkpoint | None = None,
    precision: str | None = None,
    compile: bool | None = None,
) -> LoadedModel:
    """Resolve (unless ``checkpoint`` is given), validate and load a checkpoint onto a
    device as a Text2EarthPipeline (or Text2EarthInpaintPipeline for 9-channel UNets), each
    part in its dtype for ``precision`` (None: auto; see engine.model.precision), then made fast
    for the device (engine.model.accelerate; ``compile`` None: on CUDA only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.schedulers import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from engine.model.pipeline import Text2EarthPipeline
    from engine.model.precision import device_facts, part_dtypes, resolve_precision
    from engine.model.schedulers import DEFAULT_SCHEDULER, make_scheduler

    torch_device, _ = select_device(device)
    facts = device_facts(torch_device)
    precision = resolve_precision(precision, facts)  # before any loading
    checkpoint = checkpoint or resolve_checkpoint(model, offline, cache_dir)
    dtypes = part_dtypes(precision)
    path = checkpoint.path

    # The largest tensors first (the text encoder's token embedding), while little is resident.
    text_encoder = _load_weights("text_encoder", CLIPTextModel, path, dtypes["text_encoder"])
    vae = _load_weights("vae", AutoencoderKL, path, dtypes["vae"])
    unet = _load_weights("unet", UNet2DConditionModel, path, dtypes["unet"])
    tokenizer = _load_part("tokenizer", CLIPTokenizer.from_pretrained, path)
    scheduler_config = _load_part("scheduler", DDIMScheduler.load_config, path)
    if unet.config.in_channels not in (4, 9):
        raise CheckpointError(
            f"{path}/unet takes {unet.config.in_channels} input channels; Text2Earth has 4 "
            "(text-to-image) or 9 (inpainting)"
        )
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise CheckpointError(
            f"{path}: the UNet expects {unet.config.cross_attention_dim}-wide text features but "
            f"the text encoder gives {text_encoder.config.hidden_size}"
        )
    from engine.model.inpaint import Text2EarthInpaintPipeline

    inpainting = unet.config.in_channels == 9
    pipeline = (Text2EarthInpaintPipeline if inpainting else Text2EarthPipeline)(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_scheduler(DEFAULT_SCHEDULER, scheduler_config),
    )
    pipeline.to(torch_device)
    from engine.model.accelerate import CPU_COMPILE_CONFIG, WARM_TILES, accelerate
    from engine.model.compile_cache import compile_key

    sha = weights_sha256(path)
    key = compile_key(sha, precision, str(torch_device), " ".join(sorted(facts.cpu_flags)),
                      repr((sorted(CPU_COMPILE_CONFIG.items()), WARM_TILES)))
    speed = accelerate(pipeline, torch_device, compile, compile_key=key)
    return LoadedModel(pipeline, checkpoint, sha, torch_device, dtypes["unet"],
                       precision=precision, speed=speed.as_dict(), compile_key=key)
