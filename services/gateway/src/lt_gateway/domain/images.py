"""Image tokens as each provider bills them, from the image's size.

A `data:` URL's size is read from the image header (PNG, GIF, JPEG, WebP). The gateway never fetches a remote
URL, so a remote image (or one whose header cannot be read) is estimated at the most its provider's rule
can bill for one image: the reservation always covers it.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from leaky_common.errors import InvalidRequest

Size = tuple[int, int]

# OpenAI (GPT-4o family): fit into 2048x2048, shortest side down to 768, 170 per 512px tile plus 85;
# detail "low" is the base alone. The worst case is 768x2048: 2x4 tiles.
OPENAI_BASE, OPENAI_TILE = 85, 170
OPENAI_MAX = OPENAI_BASE + 8 * OPENAI_TILE
# Models that bill the same tiles at other rates (base, per tile), by upstream model prefix.
OPENAI_TILE_RATES = {"gpt-4o-mini": (2833, 5667)}
# Anthropic: long edge down to 1568, then (w*h)/750, and never more than about 1,600 tokens per image.
ANTHROPIC_EDGE, ANTHROPIC_MAX = 1568, 1600
# Gemini: both sides <= 384 -> 258; else 258 per 768x768 tile. Unknown sizes: taken as 3072x3072 (16 tiles).
GEMINI_TILE, GEMINI_SMALL, GEMINI_MAX = 258, 384, 16 * 258
# Qwen-VL: one token per 28x28 patch, 4 to 1280 per image, plus its 2 vision markers.
QWEN_PATCH, QWEN_MIN, QWEN_MAX, QWEN_MARKERS = 28, 4, 1280, 2


@dataclass(frozen=True, slots=True)
class ImagePart:
    """One image of a prompt: its size if known, and OpenAI's `detail`."""

    size: Size | None
    detail: str = "auto"


def _png(data: bytes) -> Size | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None


def _gif(data: bytes) -> Size | None:
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    return None


def _jpeg(data: bytes) -> Size | None:
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        # SOF0..SOF15 carry the frame size (C4, C8 and CC are not frames).
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _webp(data: bytes) -> Size | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    kind = data[12:16]
    if kind == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def data_url_size(url: str) -> Size | None:
    """The size of a base64 `data:` image, if its header is readable (None otherwise)."""
    head, sep, payload = url.partition(";base64,")
    if not head.startswith("data:") or not sep:
        return None
    try:
        # The header is within the first few KB, except JPEG's (after EXIF): decode what is needed.
        data = base64.b64decode(payload[:65536] + "=" * (-len(payload[:65536]) % 4))
    except (binascii.Error, ValueError):
        return None
    for reader in (_png, _gif, _jpeg, _webp):
        size = reader(data)
        if size is not None:
            return size if size[0] > 0 and size[1] > 0 else None
    return None


def image_part(part: dict[str, Any], where: str) -> ImagePart:
    """An `image_url` content part (400 if it has no URL)."""
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.image_url must have a url", param=where)
    detail = ref.get("detail") if isinstance(ref, dict) else None
    return ImagePart(data_url_size(url), detail if detail in ("low", "high", "auto") else "auto")


def openai_tokens(image: ImagePart, base: int = OPENAI_BASE, tile: int = OPENAI_TILE) -> int:
    """OpenAI's tile rule (at a model's own rates if given)."""
    if image.detail == "low":
        return base
    if image.size is None:
        return base + 8 * tile
    # Exact fractions: a float a hair above a tile boundary would bill a tile more.
    w, h = Fraction(image.size[0]), Fraction(image.size[1])
    scale = min(Fraction(1), 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(Fraction(1), 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def anthropic_tokens(image: ImagePart) -> int:
    """Anthropic's (w*h)/750 after the long edge is brought down to 1568."""
    if image.size is None:
        return ANTHROPIC_MAX
    w, h = image.size
    scale = min(Fraction(1), Fraction(ANTHROPIC_EDGE, max(w, h)))
    return min(ANTHROPIC_MAX, math.ceil(w * scale * h * scale / 750))


def gemini_tokens(image: ImagePart) -> int:
    """Gemini's 258 per image up to 384x384, else per 768x768 tile."""
    if image.size is None:
        return GEMINI_MAX
    w, h = image.size
    if w <= GEMINI_SMALL and h <= GEMINI_SMALL:
        return GEMINI_TILE
    return GEMINI_TILE * math.ceil(w / 768) * math.ceil(h / 768)


def qwen_tokens(image: ImagePart) -> int:
    """Qwen-VL's 28x28 patches, bounded per image."""
    if image.size is None:
        return QWEN_MAX + QWEN_MARKERS
    w, h = image.size
    patches = math.ceil(w / QWEN_PATCH) * math.ceil(h / QWEN_PATCH)
    return min(QWEN_MAX, max(QWEN_MIN, patches)) + QWEN_MARKERS


_RULES = {"anthropic": anthropic_tokens, "gemini": gemini_tokens, "qwen": qwen_tokens}


def image_tokens(images: tuple[ImagePart, ...], provider: str, model: str = "") -> int:
    """What `provider` bills for the images sent to `model` (OpenAI's rule for every OpenAI-shaped
    provider, at the model's own tile rates where they differ)."""
    if not images:
        return 0
    rule = _RULES.get(provider)
    if rule is not None:
        return sum(rule(image) for image in images)
    base, tile = next(
        (rates for prefix, rates in OPENAI_TILE_RATES.items() if model.startswith(prefix)),
        (OPENAI_BASE, OPENAI_TILE),
    )
    return sum(openai_tokens(image, base, tile) for image in images)
