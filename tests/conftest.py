"""Fixtures shared by the test modules, and the ``needs`` marker of the tests that read real data.

``@pytest.mark.needs("data/ucsd_ped2", "weights/yolo-fastest-1.1-coco")`` names what a test reads from the
project's shared folder (``../shared`` beside the checkout; its README says what each holds). Without it the test
fails and says which folder it needs: real-data checks are never silently skipped.
"""
import os
from pathlib import Path

import cv2
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*paths): the shared data or weights (under ../shared) a test reads")


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures, which may already read the data
def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        missing = [p for p in mark.args if not (SHARED / p).exists()]
        if missing:
            pytest.fail(f"{item.nodeid} needs {', '.join(str(SHARED / p) for p in missing)}: the project's shared "
                        f"data (read-only, beside the checkout; see {SHARED / 'data' / 'README.md'})", pytrace=False)


@pytest.fixture(scope="module")
def one_thread():
    """Small networks on a shared CPU: one intra-op thread avoids oversubscription (``pytestmark`` usefixtures)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


if os.environ.get("PYTEST_XDIST_WORKER"):  # one test process per core: one thread each, or they oversubscribe
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # and the processes the tests start
