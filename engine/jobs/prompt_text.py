"""What a prompt may hold: text of a sensible length, no control characters.

One rule for every way in (CLI, service, batch rows): the model reads only CLIP's first 77
tokens, so thousands of characters are a mistake (a pasted file), and a NUL or an escape
sequence ends up in the output's TIFF tags and in terminals.
"""

from __future__ import annotations

import unicodedata

from engine.errors import InputError

MAX_PROMPT_CHARS = 4000  # CLIP reads ~77 tokens (a few hundred characters); the service's cap
ALLOWED_CONTROLS = frozenset("\t\n\r")  # line breaks from a multi-line prompt box are spaces


def check_prompt_text(text: str, what: str = "the prompt") -> str:
    """``text`` unchanged if it is a usable prompt; else InputError naming what is wrong (and
    never echoing the text itself, which may be megabytes)."""
    if not isinstance(text, str):
        raise InputError(f"{what} must be text, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"{what} is {len(text)} characters long; at most {MAX_PROMPT_CHARS} "
                         "are accepted (the model reads only its first 77 tokens): shorten it")
    for index, char in enumerate(text):
        if char in ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            raise InputError(f"{what} holds the control character U+{ord(char):04X} at "
                             f"position {index + 1}: remove it")
        if category == "Cs":
            raise InputError(f"{what} holds an unpaired surrogate (U+{ord(char):04X}) at "
                             f"position {index + 1}: it is not valid text")
    return text
