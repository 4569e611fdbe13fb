"""What a run records about itself so its figures can be reproduced and compared across machines: versions, git
commit, seed, device, precision, the CPU and its relevant instruction sets, and the time of a fixed reference
workload on this machine (figures from two machines compare as ratios of it; docs/BENCHMARKS.md)."""
from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from image_od.engine.precision import cpu_flags, cpu_model

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what decides the CPU's conv speed
REFERENCE_STEPS = 40  # about 1.1 s on 2 threads of the AMD EPYC of docs/BENCHMARKS.md


def git_commit() -> str | None:
    """The commit of the source tree this code runs from (with '+dirty' for uncommitted changes)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def cpu_info() -> dict[str, Any]:
    """The CPU model, its instruction-set flags that matter here, and the kernels PyTorch picked for it."""
    import torch

    flags = cpu_flags()
    return {"model": cpu_model(), "flags": {f: f in flags for f in CPU_FLAGS},
            "torch_capability": torch.backends.cpu.get_cpu_capability()}


@functools.lru_cache(maxsize=None)
def reference_workload_s(device: str = "cpu") -> float:
    """Seconds of a fixed fp32 workload: ``REFERENCE_STEPS`` forward+backward passes of a fixed-seed 3-layer conv
    net on a fixed 64x3x32x32 batch (after one untimed warm-up pass), on this process's torch threads. A figure
    divided by it compares across machines. Measured once per process and device (the first run's value)."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).to(device)
        x, y = torch.randn(64, 3, 32, 32, device=device), torch.arange(64, device=device) % 10

    def step() -> None:
        net.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(net(x), y).backward()

    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    step()
    sync()
    start = time.perf_counter()
    for _ in range(REFERENCE_STEPS):
        step()
    sync()
    return time.perf_counter() - start


def environment(seed: int, device: str, precision: str | None = None) -> dict[str, Any]:
    """The run's env.json; ``precision`` is the resolved training precision where the run has one."""
    import cv2
    import numpy
    import sklearn
    import torch
    import torchvision

    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "seed": seed,
        "device": device,
        **({"precision": precision} if precision else {}),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "reference_workload_s": round(reference_workload_s(device), 4),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
                     "opencv": cv2.__version__, "scikit-learn": sklearn.__version__},
        "argv": sys.argv,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
