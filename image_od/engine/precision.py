"""Training precision that fits the hardware: bfloat16 autocast only where the device runs it natively.

On a CPU without bfloat16 instructions PyTorch emulates bf16 arithmetic, about 8x slower than fp32 (measured on
WRN-10-1 training steps with AVX2 kernels), so ``auto`` falls back to fp32 there. Native bf16 on a CPU means the
AVX512-BF16 or AMX-BF16 instructions (x86) with PyTorch's AVX512 kernels in use (``ATEN_CPU_CAPABILITY=avx2``
turns them off), or the BF16 extension (ARM); on CUDA, ``torch.cuda.is_bf16_supported`` without emulation.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")
CPUINFO = Path("/proc/cpuinfo")


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The fields of the first processor block of a /proc/cpuinfo text ('flags' on x86, 'Features' on ARM)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpuinfo() -> dict[str, str]:
    """This machine's /proc/cpuinfo fields (empty where there is none, e.g. macOS or Windows)."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return {}


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as Linux names them (empty where unknown)."""
    info = cpuinfo()
    return set((info.get("flags") or info.get("Features") or "").split())


def cpu_model() -> str | None:
    """The CPU's model name, e.g. 'AMD EPYC' (None where unknown)."""
    import platform

    info = cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 arithmetic in hardware with the kernels PyTorch uses."""
    flags = cpu_flags()
    if not flags:  # no /proc/cpuinfo: ask PyTorch (x86 only)
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "bf16" in flags


def cuda_has_native_bf16() -> bool:
    """Whether the current CUDA device has bfloat16 arithmetic (compute capability 8.0 or later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(name: str, device: torch.device | str) -> str:
    """``bf16`` or ``fp32``: ``auto`` is bf16 only where ``device`` runs it natively; the others are kept."""
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {name!r}; expected one of {PRECISIONS}")
    if name != "auto":
        return name
    kind = torch.device(device).type
    if kind == "cpu":
        native = cpu_has_native_bf16()
    else:
        native = kind == "cuda" and cuda_has_native_bf16()
    return "bf16" if native else "fp32"


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """bfloat16 autocast on ``device`` when the resolved ``precision`` is ``bf16``; for ``fp32`` nothing (an
    enclosing autocast stays in force)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be resolved to fp32 or bf16, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
