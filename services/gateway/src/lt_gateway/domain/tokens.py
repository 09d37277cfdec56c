"""Token counting for reservations and for streams the upstream reports no usage for.

An estimate only decides how much to reserve; settlement uses the provider's reported usage whenever it
reports one. Counting uses tiktoken's `cl100k_base` BPE, shipped with the package (tiktoken would otherwise
download it at first use, which fails offline), plus OpenAI's per-message framing.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken
from tiktoken.load import load_tiktoken_bpe

# A package data file, read once (like a constant): counting itself does no I/O.
_BPE_FILE = Path(__file__).parent.parent / "data" / "tiktoken" / "cl100k_base.tiktoken"
# From tiktoken_ext.openai_public.cl100k_base (the regex and special tokens of the encoding).
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|"""
    r"""\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    """The shipped `cl100k_base` encoding (loaded once, offline)."""
    enc = tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=load_tiktoken_bpe(str(_BPE_FILE)),
        special_tokens=_CL100K_SPECIAL,
    )
    # The Rust core holds its own copy of the ranks; the Python dict is only kept for pickling (~16 MB).
    enc._mergeable_ranks = {}
    return enc


def text_tokens(text: str) -> int:
    """Tokens in a piece of text (special-token strings count as ordinary text)."""
    if not text:
        return 0
    return len(encoding().encode_ordinary(text))


def content_text(content: Any) -> str:
    """The text of a message's `content` (a string or a list of parts; non-text parts contribute nothing)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Prompt tokens of a chat request as OpenAI counts them (content, names, tool calls, framing)."""
    total = _REPLY_PRIMING
    for m in messages:
        total += _PER_MESSAGE + text_tokens(content_text(m.get("content")))
        if m.get("name"):
            total += _PER_NAME + text_tokens(str(m["name"]))
        for call in m.get("tool_calls") or ():
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                total += text_tokens(str(fn.get("name", ""))) + text_tokens(str(fn.get("arguments", "")))
    return total


def estimate_input_tokens(value: Any) -> int:
    """Tokens of a `/v1/completions` prompt or `/v1/embeddings` input (string, list of strings, token ids)."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(estimate_input_tokens(v) for v in value)
    return 0


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (the mock provider answers it)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    return ""
