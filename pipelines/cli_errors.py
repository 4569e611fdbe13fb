"""How the command-line tools report failures: a problem with the user's input (a bad file, setting or folder) is
one line on stderr and exit code 2; anything else is a bug and keeps its traceback. ``--debug`` shows the
traceback of input errors too."""
from __future__ import annotations

import sys
import zipfile
from typing import Callable

# Project errors (ConfigError, DatasetError, RegionError, ImageDatasetError, UnsafeFileError, ...) are ValueErrors;
# OSError covers missing, unreadable and unwritable files (FileNotFoundError, PermissionError, h5py's errors);
# EOFError and BadZipFile come from truncated files (pickles, .npy, .npz).
USER_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile)


def describe(err: BaseException) -> str:
    """One line saying what is wrong, with the file when the error knows it."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    elif isinstance(err, (EOFError, zipfile.BadZipFile)):
        text = f"truncated or corrupt file ({type(err).__name__}{': ' + str(err) if str(err) else ''})"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def report_errors(prog: str, debug: bool, action: Callable[[], int]) -> int:
    """Run ``action``; an input error becomes ``prog: error: ...`` on stderr and exit code 2 (raised with ``debug``)."""
    try:
        return action()
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {describe(err)}", file=sys.stderr)
        return 2
