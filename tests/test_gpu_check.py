"""``scripts/gpu_check.sh`` off a GPU: it stops at once, with one line, and writes nothing.
(On a GPU it runs for minutes; that run is for lent GPU machines, never CI.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "gpu-check.md"
    full = {**os.environ, "GPU_CHECK_OUT": str(out), **env}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full,
                          cwd=REPO, timeout=120)


def test_without_nvidia_smi_it_stops_with_one_line(tmp_path: Path) -> None:
    r = _run(tmp_path, NVIDIA_SMI=str(tmp_path / "no-such-nvidia-smi"))
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no GPU here"), lines
    assert not (tmp_path / "gpu-check.md").exists()


def test_nvidia_smi_listing_no_device_stops_too(tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    smi.chmod(0o755)
    r = _run(tmp_path, NVIDIA_SMI=str(smi))
    assert r.returncode != 0
    assert (r.stdout + r.stderr).strip().splitlines() == [
        f"gpu_check: no GPU here: {smi} lists no device"]


def test_torch_without_cuda_stops_with_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("torch has CUDA here: the script would run the whole check")
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771 MiB, 560.35.03'\n")
    smi.chmod(0o755)
    # a prepared venv (this interpreter's): no make setup in a test
    r = _run(tmp_path, NVIDIA_SMI=str(smi), BBX_GPU_CHECK_SETUP="0", VENV=sys.prefix)
    assert r.returncode != 0
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 1 and "has no usable CUDA" in lines[0], lines
    assert not (tmp_path / "gpu-check.md").exists()
