"""Load a user's images for outlier scoring: a folder of image files or a .npy array."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .protocol import zero_pad

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_images(path: str | Path, size: int = 32, grey: bool = False) -> tuple[np.ndarray, list[str]]:
    """Images at size x size as uint8 (N,H,W) if grey else (N,H,W,3) RGB, and their names.

    Smaller images are zero-padded around the centre (the paper pads MNIST's 28x28 to 32x32); larger ones are
    resized with area averaging.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"images not found: {path}")
    if path.suffix == ".npy":
        arr = np.load(path)
        if arr.ndim not in (3, 4) or arr.dtype != np.uint8:
            raise ValueError(f"{path}: expected a uint8 array (N,H,W) or (N,H,W,C), got {arr.dtype} {arr.shape}")
        names = [f"{path.name}[{i}]" for i in range(len(arr))]
        frames = list(arr)
    else:
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXT and not p.name.startswith("."))
        if not files:
            raise ValueError(f"no image files ({sorted(IMAGE_EXT)}) under {path}")
        frames = []
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"unreadable image: {f}")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        names = [str(f.relative_to(path)) for f in files]
    out = []
    for img in frames:
        if img.shape[0] <= size and img.shape[1] <= size:
            img = zero_pad(img[None], size)[0]
        else:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        if grey and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        elif not grey and img.ndim == 2:
            img = np.repeat(img[..., None], 3, 2)
        out.append(img)
    return np.stack(out), names
