"""Write a randomly initialised SigLIP in Git-RSCLIP's folder layout, for tests and the bench.

Same files as ``lcybuaa/Git-RSCLIP`` (config.json with ``model_type: siglip``, safetensors
weights, a SentencePiece ``spiece.model``, tokenizer and image-processor configs), only tiny,
so the suite loads it through the very code that loads the real model. The SentencePiece
model is trained here, offline, on a few lines of remote-sensing text: no download.
"""

from __future__ import annotations

import io
from pathlib import Path

# A few captions in Git-10M's register: enough pieces for a small unigram vocabulary.
TRAINING_TEXT = (
    "an aerial view of a dense residential area with red roofs and narrow streets",
    "a satellite image of farmland with rectangular green and brown fields",
    "a river winding through a forest with a bridge and a small town nearby",
    "an airport with two runways, parked airplanes and a terminal building",
    "a harbor with ships, piers, containers and storage tanks by the sea",
    "a mountain range with snow on the peaks and bare rock slopes",
    "a desert with sand dunes and a dry riverbed under clear sky",
    "a baseball diamond, tennis courts and a stadium in a park",
    "an industrial area with large warehouses, parking lots and a highway",
    "a beach with white sand, turquoise water and a row of hotels",
    "a dense forest, a lake, a meadow and a country road",
    "chaparral, freeway overpass, intersection, mobile home park, golf course",
)
VOCAB_SIZE = 256
IMAGE_SIZE = 256  # Git-RSCLIP's input size: a 256 px generation is one model input


def write_spiece_model(path: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Train a unigram SentencePiece model with SigLIP's special ids (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT),
        model_writer=model,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def write_tiny_rank_model(folder: Path, seed: int = 0, image_size: int = IMAGE_SIZE) -> Path:
    """A random tiny SigLIP with its processor, saved as safetensors; returns ``folder``."""
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()  # SiglipConfig's defaults warn before our sizes replace them
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spiece = write_spiece_model(folder / "spiece.model")
    tokenizer = SiglipTokenizer(vocab_file=str(spiece), model_max_length=64)
    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    config = SiglipConfig(
        text_config=dict(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, pad_token_id=1, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(image_size=image_size, patch_size=32, hidden_size=32,
                           intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    # Random init leaves the logit scale at log(1) and bias 0; the trained model's are
    # ~log(100) and ~-10. Use those so probabilities spread as the real ones do.
    with torch.no_grad():
        model.logit_scale.fill_(2.3)
        model.logit_bias.fill_(0.0)
    model.save_pretrained(folder)
    return folder
