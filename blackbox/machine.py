"""What the CPU is: its model name and the vector units that change results and speed.

A leaf module: the engine reads it to choose a dtype, run manifests to record the machine.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any


def _read_cpuinfo(cpuinfo: str | None) -> tuple[str, set[str]]:
    """The first CPU's model name and flags from the text of ``/proc/cpuinfo`` (read when
    ``cpuinfo`` is None; empty where there is none, as off Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = "", set[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_bf16_units(cpuinfo: str | None = None) -> str | None:
    """The CPU's native bf16 matmul instructions ("amx_bf16" or "avx512_bf16"), or None.

    Either lets oneDNN run bf16 matmuls natively: AMX tiles (Sapphire Rapids and later) at
    several times the fp32 rate, AVX-512 BF16 dot products (Cooper Lake, AMD Zen 4 and
    later) at about twice it (measured 2.4x on a 2-core Zen 4 VM). Without either (AVX-512F
    or AVX2 only, e.g. Cascade Lake) torch emulates bf16 and it runs ~3x *slower* than fp32.
    ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when not given).
    """
    flags = _read_cpuinfo(cpuinfo)[1]
    return next((f for f in ("amx_bf16", "avx512_bf16") if f in flags), None)


def cpu_description(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU's model name and the vector units that change float results across machines.

    fp32 matmuls on AVX2 and on AVX-512 sum in different orders (results differ around 1e-5),
    and "auto" picks bf16 only with native bf16 units: a run's manifest says which it ran on.
    """
    model, flags = _read_cpuinfo(cpuinfo)
    units = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": model or platform.processor() or "unknown", "cpu_units": units}
