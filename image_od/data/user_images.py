"""Load a user's images for outlier scoring: a folder of image files or a .npy array."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from image_od.data.protocol import zero_pad

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class ImageReadError(ValueError):
    """An image file that cannot be read or is truncated; the message names the file."""


def jpeg_is_complete(data: bytes) -> bool:
    """Whether JPEG bytes end their last scan with the end-of-image marker (FF D9).

    A truncated JPEG stops inside its entropy-coded data, where FF D9 cannot occur; libjpeg would decode it with
    the missing rows grey and only print a warning. Bytes after the marker (padding, appended previews) are fine.
    """
    sos = data.rfind(b"\xff\xda")  # the last start-of-scan marker
    return sos >= 0 and data.find(b"\xff\xd9", sos) >= 0


def read_image_file(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode one image file with OpenCV (``flags`` as for ``cv2.imread``).

    Raises :class:`ImageReadError` naming the file when it cannot be read, is empty, is a truncated or corrupt JPEG
    or cannot be decoded. 16-bit images come back at 8 bits, scaled by their real bit depth (:func:`_to_8_bits`).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageReadError(f"cannot read the image file {path}: {err.strerror or err}") from None
    if not data:
        raise ImageReadError(f"empty image file: {path}")
    if data[:2] == b"\xff\xd8":
        if not jpeg_is_complete(data):
            raise ImageReadError(f"truncated JPEG (no end-of-image marker after its last scan): {path}")
        img, warnings = _decode_jpeg_with_warnings(data, flags)
        if warnings:
            raise ImageReadError(f"corrupt JPEG (libjpeg: {warnings[0]}): {path}")
    else:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_ANYDEPTH)
    if img is None:
        raise ImageReadError(f"OpenCV cannot decode the image file {path}")
    return _to_8_bits(img, data, path) if img.dtype == np.uint16 else img


def png_significant_bits(data: bytes) -> int | None:
    """The bit depth a PNG's sBIT chunk declares (the largest of its channels), or None without one."""
    pos = 8
    while data[:8] == b"\x89PNG\r\n\x1a\n" and pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"sBIT":
            return max(data[pos + 8:pos + 8 + length], default=None)
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _to_8_bits(img: np.ndarray, data: bytes, path: Path) -> np.ndarray:
    """A 16-bit image at 8 bits, scaled by its real bit depth: the PNG's sBIT chunk when it has one, else 16 bits.
    Without sBIT, values that all fit in 12 bits are ambiguous (12-bit camera data would be read nearly black as
    16-bit, OpenCV's own conversion), so such a file is refused rather than guessed."""
    bits = png_significant_bits(data)
    if bits is None and int(img.max()) < 1 << 12:
        raise ImageReadError(f"16-bit image whose values all fit in 12 bits (max {int(img.max())}) and that does not "
                             f"declare its bit depth (no PNG sBIT chunk): scaling it as 16 bits would make it nearly "
                             f"black; convert it to 8 bits, or add sBIT: {path}")
    bits = bits or 16
    if int(img.max()) >= 1 << bits:
        raise ImageReadError(f"values up to {int(img.max())} in an image that declares {bits} significant bits: {path}")
    return np.round(img.astype(np.float32) * (255.0 / ((1 << bits) - 1))).astype(np.uint8)


LIBJPEG_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG file", "Invalid JPEG", "Bogus", "Warning:")


def _decode_jpeg_with_warnings(data: bytes, flags: int) -> tuple[np.ndarray | None, list[str]]:
    """Decode JPEG bytes and return libjpeg's corrupt-data warnings. libjpeg decodes a damaged scan with the rows
    it lost grey and only prints a warning to the C-level stderr (without the file's name), so fd 2 is pointed at a
    temporary file for the decode; text that is not such a warning goes back to the real stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
            finally:
                os.dup2(saved, 2)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
    finally:
        os.close(saved)
    lines = text.splitlines()
    warnings = [line.strip() for line in lines if line.strip().startswith(LIBJPEG_WARNINGS)]
    rest = [line for line in lines if line.strip() and not line.strip().startswith(LIBJPEG_WARNINGS)]
    if rest:
        print("\n".join(rest), file=sys.stderr)
    return img, warnings


def decode_image(path: str | Path, grey: bool | None = False) -> np.ndarray:
    """One image file as grey (H,W) or RGB (H,W,3) uint8; ``grey=None`` keeps what the file holds (alpha dropped).
    Raises :class:`ImageReadError` naming the file (as :func:`read_image_file`, and for pixels other than 8-bit)."""
    flags = {True: cv2.IMREAD_GRAYSCALE, False: cv2.IMREAD_COLOR, None: cv2.IMREAD_UNCHANGED}[grey]
    img = read_image_file(path, flags)
    if img.dtype != np.uint8:
        raise ImageReadError(f"{path}: expected 8-bit pixels, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return img


def match_kind(img: np.ndarray, grey: bool) -> np.ndarray:
    """A grey (H,W) or RGB (H,W,3) image as the kind asked for: RGB to grey by luma, grey repeated over 3 channels."""
    if grey and img.ndim == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if not grey and img.ndim == 2:
        return np.repeat(img[..., None], 3, 2)
    return img


def fit_size(img: np.ndarray, size: int) -> np.ndarray:
    """An image (H,W[,C]) at size x size: zero-padded around the centre when no larger (the paper pads MNIST's
    28x28 to 32x32), else resized with area averaging."""
    if img.shape[0] <= size and img.shape[1] <= size:
        return zero_pad(img[None], size)[0]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _read_folder(path: Path, skipped: list[str] | None) -> tuple[list[np.ndarray], list[str]]:
    """RGB images and names of every image file under ``path``; bad files raise, or go to ``skipped`` if given."""
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))
    if not files:
        raise ValueError(f"no image files ({sorted(IMAGE_EXT)}) under {path}")
    frames, names = [], []
    for f in files:
        try:
            frames.append(decode_image(f))
        except ImageReadError as err:
            if skipped is None:
                raise
            skipped.append(str(err))
            continue
        names.append(str(f.relative_to(path)))
    if not frames:
        raise ValueError(f"no readable images under {path}: all {len(files)} image files are bad")
    return frames, names


def load_images(path: str | Path, size: int = 32, grey: bool = False,
                skipped: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Images at size x size as uint8 (N,H,W) if grey else (N,H,W,3) RGB, and their names.

    Smaller images are zero-padded around the centre (the paper pads MNIST's 28x28 to 32x32); larger ones are
    resized with area averaging. An unreadable or truncated image file raises :class:`ImageReadError`, unless a
    ``skipped`` list is given: then the file is left out and its error message appended to the list.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"images not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path)
        except (EOFError, ValueError, OSError) as err:
            raise ImageReadError(f"{path}: not a readable .npy array ({type(err).__name__}: {err})") from None
        if arr.ndim not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"{path}: expected a uint8 array (N,H,W) or (N,H,W,C), got {arr.dtype} {arr.shape}")
        names = [f"{path.name}[{i}]" for i in range(len(arr))]
        frames = list(arr)
    else:
        frames, names = _read_folder(path, skipped)
    return np.stack([match_kind(fit_size(img, size), grey) for img in frames]), names
