"""Reading files a user hands us without running code from them.

Pickle-based formats can execute arbitrary code while being read. Our own model and checkpoint files hold only
tensors and plain data, so they are read with ``torch.load(weights_only=True)``; the CIFAR python batches (the
dataset's official format) are read with an unpickler that builds only plain containers, strings, numbers and
numpy arrays. Anything else is refused with an :class:`UnsafeFileError` naming the file.
"""
from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A file that holds executable objects (or is not the expected format): the message names it."""


class UnreadableFileError(ValueError):
    """A truncated, empty or corrupt file: the message names it."""


def load_tensors(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain data (``weights_only=True``), with errors that name ``path``."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(
            f"refusing to load {path}: it holds objects other than tensors and plain data, which could run code "
            f"when read (written by an older version of this toolkit, or not by it at all: retrain to recreate "
            f"it){_weights_only_detail(err)}") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile) as err:
        what = "empty file" if path.stat().st_size == 0 else f"truncated or corrupt file ({str(err).split('. ')[0]})"
        raise UnreadableFileError(f"{path}: {what}, not readable as a PyTorch file") from None


def _weights_only_detail(err: Exception) -> str:
    """The line of torch's weights-only error that names the refused global, if any."""
    line = next((x for x in str(err).splitlines() if "GLOBAL" in x), "")
    return f"; {line.strip()}" if line else ""


# numpy globals a pickled ndarray needs (module moved from numpy.core to numpy._core in numpy 2)
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_ALLOWED_GLOBALS = _NUMPY_GLOBALS | {("_codecs", "encode")}  # protocol-2 pickles of bytes (numpy buffers) use it


class _PlainUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, str, bytes, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy.core"):  # numpy >= 2 keeps these in numpy._core
            try:
                return super().find_class("numpy._core" + module[len("numpy.core"):], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def unpickle_plain(path: str | Path, encoding: str = "latin1") -> Any:
    """A pickle holding only plain data and numpy arrays (e.g. the CIFAR python batches)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return _PlainUnpickler(f, encoding=encoding).load()
    except pickle.UnpicklingError as err:
        raise UnsafeFileError(f"refusing to read {path}: it is not a plain-data pickle ({err}); a CIFAR batch holds "
                              "only dicts, lists, strings, numbers and numpy arrays") from None
    except (EOFError, ValueError, TypeError, IndexError) as err:
        raise UnreadableFileError(f"{path}: truncated or corrupt pickle ({type(err).__name__}: {err})") from None


def state_dict_in(obj: Any, path: str | Path, what: str) -> dict[str, "torch.Tensor"]:
    """The tensors of a plain state_dict, or of a checkpoint's ``state_dict``/``model`` entry, with DataParallel's
    ``module.`` prefix removed; a clear error naming ``path`` and ``what`` it should hold otherwise."""
    import torch

    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ValueError(f"{path}: not a {what} state_dict (expected a dict of tensors, or a dict with a "
                         f"'state_dict' or 'model' entry holding one); got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def state_dict_mismatch(given: Mapping[str, Any], expected: Mapping[str, Any],
                        may_miss: Callable[[str], bool] = lambda key: False) -> str:
    """What keeps the state_dict ``given`` from loading into a model whose state_dict is ``expected``: its missing keys
    (BN batch counters and keys ``may_miss`` accepts aside), unexpected keys and shape mismatches, a few of each
    named, '' when it fits."""
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked") and not may_miss(k)]
    unexpected = [k for k in given if k not in expected]
    wrong = [f"{k} {tuple(given[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in given and given[k].shape != v.shape]
    return "; ".join(f"{what} {len(keys)}: {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"
                     for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                        ("shape mismatches", wrong)) if keys)
