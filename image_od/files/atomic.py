"""Writing files so that a reader never sees half of one: write a temporary file, then rename it."""
from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block completes."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if disk_full(err, path.parent) and not getattr(err, "filename", None):  # torch says only "unexpected pos 640 vs 534"; h5py a page of driver text
            raise OSError(errno.ENOSPC, f"No space left on the device ({free_mib(path.parent):.0f} MiB free) to "
                                        f"write", str(path)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


LOW_SPACE = 64 << 20  # bytes: below this a failed write is taken for a full disk


def free_mib(folder: str | Path) -> float:
    return shutil.disk_usage(folder).free / 2 ** 20


def disk_full(err: BaseException, folder: str | Path) -> bool:
    """Whether a failed write ran out of disk space: ENOSPC, or an error with no such code while the disk is all
    but full."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "No space left on device" in str(err):
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE
    except OSError:
        return False


def check_free_space(folder: str | Path, need: int, what: str) -> None:
    """Raise a clear ENOSPC error before writing ``need`` bytes (plus ``LOW_SPACE``) where they will not fit:
    HDF5 fails a write on a full disk with a page of driver text and can crash the process when it closes."""
    free = shutil.disk_usage(folder).free
    if free < need + LOW_SPACE:
        raise OSError(errno.ENOSPC, f"not enough free disk space for {what}: {free / 2 ** 20:.0f} MiB free, the next "
                                    f"step needs about {(need + LOW_SPACE) / 2 ** 20:.0f} MiB; free some and run again "
                                    f"(finished work is kept)", str(folder))


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str))
