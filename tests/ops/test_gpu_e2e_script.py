"""benchmarks/gpu_e2e.sh --dry-run: the H200 script runs end to end on the CPU at tiny sizes
and prints every row of its table (so the one GPU call it gets is not spent on a typo)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_e2e_dry_run_prints_every_figure():
    proc = subprocess.run(["bash", "benchmarks/gpu_e2e.sh", "--dry-run"], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    figures = {row.split(" | ")[0].lstrip("| ") for row in rows}
    assert figures == {"correlation fwd", "warp fwd", "generator step", "destroyer step", "eval, Ped2-shaped set"}
    for stage in ("generator step", "destroyer step"):
        ours = [r for r in rows if r.startswith(f"| {stage} | ours")]
        assert len(ours) == 3 and any("it/s" in r and "%" in r for r in ours), ours
        assert any("reference algorithm" in r for r in rows if r.startswith(f"| {stage}"))
    assert any("frames/s" in r and "ours bf16" in r for r in rows)
    assert "measured ceilings" in proc.stdout and "FAILED" not in proc.stdout


def test_gpu_e2e_without_cuda_says_so():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_e2e"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2 and "no CUDA device: run with --dry-run" in proc.stderr
