"""benchmarks/gpu_check.py runs its checks on CPU too (a dry run of the GPU script): every op
agrees with the reference, forward and backward, and the table is printed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_on_cpu():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu", "--small"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for op in ("correlation", "warp ", "warp_residual", "bottleneck_sim", "patch_destroy_loss"):
        assert any(line.startswith(op) for line in lines), op
    assert "MISMATCH" not in proc.stdout
