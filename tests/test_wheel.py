"""mama as a user installs it: a wheel built from this checkout, installed with pip into a
fresh virtual environment (pip resolving its dependencies from the wheel's own metadata), run
from a folder outside the source tree: every module imports, the C++ ops are registered, and
`mama` goes synth -> train -> eval -> score. Several minutes (the extension is compiled)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, sys
import torch
import mama
assert "site-packages" in mama.__file__, mama.__file__  # the installed copy, not the checkout
names = [m.name for m in pkgutil.walk_packages(mama.__path__, "mama.")]
for name in names:
    importlib.import_module(name)
ops = [op for op in ("correlation", "warp", "warp_residual", "bottleneck_sim", "patch_destroy_loss", "winograd_conv3x3")
       if not hasattr(torch.ops.mama, op)]
assert not ops, f"C++ ops not registered: {ops}"
print(len(names), mama.__version__)
"""


def _run(args: list, cwd: Path, env: dict, timeout: int = 900) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_a_wheel_installs_into_a_fresh_venv_and_runs_outside_the_tree(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MAMA_CACHE"] = str(tmp_path / "cache")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps", str(REPO), "-w", dist],
         REPO, env, timeout=1800)
    wheel = next(dist.glob("mama-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    # Every package is in it (mama/features was once left out), the extension too, and it says what it needs.
    for package in ("mama/features/", "mama/live/", "mama/kernels/", "mama/cli/", "mama/evaluate/"):
        assert any(n.startswith(package) for n in names), package
    assert any(n.startswith("mama/_C") and n.endswith(".so") for n in names)
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for dep in ("torch==2.14.1", "numpy", "opencv-python-headless", "typer", "safetensors"):
        assert any(r.startswith(dep) for r in requires), (dep, requires)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    py, mama = venv / "bin" / "python", venv / "bin" / "mama"
    _run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel], tmp_path, env, timeout=1800)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([py, "-c", IMPORT_ALL], elsewhere, env)
    count, version = out.split()
    assert int(count) > 40
    assert _run([mama, "--version"], elsewhere, env).strip() == f"mama {version}"

    tiny = ["--size", "32", "--base", "8", "--batch-size", "2", "--iters", "2", "--preset", "fast", "--device", "cpu",
            "--num-workers", "0", "--save-interval", "2", "--val-interval", "2"]
    _run([mama, "data", "synth", "--out", "data", "--size", "64", "--train-videos", "2", "--test-videos", "2", "--frames",
          "30"], elsewhere, env)
    _run([mama, "train", "--stage", "generator", "--dataset", "synth", "--data-root", "data", "--out", "g", *tiny],
         elsewhere, env)
    _run([mama, "train", "--stage", "destroyer", "--dataset", "synth", "--data-root", "data", "--out", "d",
          "--generator", "g/final.pt", *tiny], elsewhere, env)
    _run([mama, "eval", "--checkpoint", "d/final.pt", "--dataset", "synth", "--data-root", "data", "--out", "e",
          "--device", "cpu"], elsewhere, env)
    assert json.loads((elsewhere / "e" / "metrics.json").read_text())
    _run([mama, "score", "data/synth/testing/frames/01", "--checkpoint", "d/final.pt", "--out", "s", "--device", "cpu"],
         elsewhere, env)
    assert len((elsewhere / "s" / "scores.csv").read_text().splitlines()) == 1 + 30 - 4
