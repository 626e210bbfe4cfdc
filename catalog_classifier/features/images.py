"""Safe loading of catalog images: every failure becomes a short, stable reason string.

Crawled catalogs name images by paths or URIs we do not control, so a reference may
point outside the image root, at a missing/empty/huge file, at something that is not
an image, or at a decompression bomb. Nothing here raises for a bad image; the
caller gets ``(None, ..., reason)`` and decides what to do (the embedder marks the row
as missing).

Reading bytes and decoding are separate steps so the embedder can hash the bytes and
skip decoding entirely when the embedding is already cached.
"""
from __future__ import annotations

import functools
import io
import os
import re
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps, UnidentifiedImageError

from ..catalog.cleaning import has_surrogate

# Formats a product photo plausibly comes in. Restricting Image.open to these keeps
# exotic decoders out of reach (EPS, for one, would shell out to Ghostscript).
# MPO (multi-picture JPEG) comes through the JPEG opener.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")

NO_IMAGE = "no image"
NOT_FOUND = "image not found"
ESCAPES_ROOT = "image path escapes image root"
EMPTY = "empty image file"
NOT_IMAGE = "not an image"
CORRUPT = "corrupt or truncated image"
REMOTE = "remote images not supported offline"
UNSUPPORTED_URI = "unsupported image URI scheme"
UNREADABLE = "image file not readable"
REFUSED_PATH = "image path refused (NUL byte or invalid Unicode)"

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


@functools.cache
def _open_formats() -> tuple[str, ...]:
    Image.init()  # register all plugins once; keep only the allowed ones this PIL build has
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def too_large_reason(n_bytes: int) -> str:
    return f"image too large ({n_bytes} bytes)"


def bomb_reason(size: tuple[int, int] | int | None) -> str:
    if size is None:
        return "decompression bomb"
    if isinstance(size, int):  # PIL's own hard limit fired before we saw W and H
        return f"decompression bomb ({size} pixels)"
    return f"decompression bomb ({size[0]}x{size[1]} pixels)"


def resolve_image_path(ref: str, image_root: str | None, real_root: str | None = None
                       ) -> tuple[str | None, str | None]:
    """Map a reference to a real filesystem path, or give the reason it cannot be used.

    With an image root, relative paths are resolved under it and the fully resolved
    path (``..`` and symlinks followed) must stay inside it; absolute paths and
    ``file://`` URIs are held to the same rule. Without a root, paths are taken as
    given (relative to the working directory): the caller chose to trust the catalog.
    A reference no filesystem can name (a NUL byte, a lone UTF-16 surrogate) is refused.
    ``real_root``: ``os.path.realpath(image_root)`` when the caller resolved it already (once for
    a batch of references instead of once each).
    """
    if "\x00" in ref or has_surrogate(ref):
        return None, REFUSED_PATH
    m = _SCHEME.match(ref)
    if m:
        scheme = m.group(1).lower()
        if scheme in ("http", "https"):
            return None, REMOTE
        if scheme != "file":
            return None, UNSUPPORTED_URI
        parsed = urlparse(ref)
        if parsed.netloc not in ("", "localhost"):
            return None, REMOTE
        ref = unquote(parsed.path)
    if image_root is None:
        return os.path.realpath(ref), None
    root = real_root if real_root is not None else os.path.realpath(image_root)
    real = os.path.realpath(os.path.join(root, ref))  # join keeps an absolute `path` as is
    try:
        inside = os.path.commonpath([root, real]) == root
    except ValueError:  # different drives on Windows
        inside = False
    return (real, None) if inside else (None, ESCAPES_ROOT)


def read_image_bytes(
    ref: str | None, image_root: str | None, max_bytes: int, real_root: str | None = None
) -> tuple[bytes | None, str | None]:
    """Read the raw bytes behind an image reference: ``(bytes, None)`` or ``(None, reason)``.
    ``real_root``: as in ``resolve_image_path``."""
    if ref is None or not isinstance(ref, str) or not ref.strip():
        return None, NO_IMAGE  # also covers NaN from pandas
    path, reason = resolve_image_path(ref.strip(), image_root, real_root)
    if path is None:
        return None, reason
    if not os.path.isfile(path):
        return None, NOT_FOUND
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                return None, too_large_reason(size)
            # the size the stat gave, and one byte more: a file that grew since then shows it and
            # is read on, up to the bound (a read of max_bytes + 1 allocates that much every time)
            data = fh.read(size + 1)
            if len(data) > size:
                data += fh.read(max_bytes + 1 - len(data))
    except OSError:
        return None, UNREADABLE
    if not data:
        return None, EMPTY
    if len(data) > max_bytes:
        return None, too_large_reason(len(data))
    return data, None


def decode_image(
    data: bytes, max_pixels: int, draft_size: int | None = None
) -> tuple[Image.Image | None, str | None]:
    """Fully decode image bytes to RGB, refusing bombs before any pixel is allocated.

    ``draft_size`` lets the JPEG decoder downscale by 1/2..1/8 (DCT scaling) while the
    longer side stays >= draft_size -- the side the letterbox resizes to draft_size --
    which is several times faster for big photos and loses nothing the CNN input needs. Transparent images are flattened onto white, the
    usual product-photo background, and EXIF orientation is applied. Above PIL's own
    hard limit (2 x Image.MAX_IMAGE_PIXELS, ~179 MP by default) PIL refuses first and
    the reason carries the pixel count only.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=_open_formats())
        w, h = img.size
        if w * h > max_pixels:
            return None, bomb_reason((w, h))
        if draft_size and img.format in ("JPEG", "MPO"):
            _draft(img, draft_size)
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img), None
    except Image.DecompressionBombError as exc:
        m = _BOMB_PIXELS.search(str(exc))
        return None, bomb_reason(int(m.group(1)) if m else None)
    except UnidentifiedImageError:
        return None, NOT_IMAGE
    except MemoryError:
        return None, bomb_reason(None)
    except Exception:  # truncated data, broken chunks, decoder errors of any kind
        return None, CORRUPT


def _draft(img: Image.Image, target: int) -> None:
    """Ask the JPEG decoder for the largest 1/2, 1/4 or 1/8 reduction whose longer side is >= target."""
    w, h = img.size
    factor = max(w, h) // target
    scale = next((s for s in (8, 4, 2) if factor >= s), 1)
    if scale > 1:  # PIL picks min(w // rw, h // rh) rounded down to 8/4/2/1: ask for exactly `scale`
        img.draft("RGB", (max(1, w // scale), max(1, h // scale)))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(
    ref: str | None, image_root: str | None, max_bytes: int, max_pixels: int
) -> tuple[Image.Image | None, bytes | None, str | None]:
    """Load one image reference: ``(RGB image, raw bytes, None)`` or ``(None, bytes|None, reason)``."""
    data, reason = read_image_bytes(ref, image_root, max_bytes)
    if data is None:
        return None, None, reason
    img, reason = decode_image(data, max_pixels)
    return img, data, reason
