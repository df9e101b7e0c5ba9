"""The destroyer's effect over several training seeds: run a recipe per seed, then report the
micro AUC of the generator and of generator + destroyer (clean protocol, unsmoothed and
sigma 10) as mean +- sd, and the paired difference (the destroyer's effect) per seed.

    python scripts/destroyer_effect.py --recipe demo --seeds 0 1 2 --out runs/effect_demo
    python scripts/destroyer_effect.py --recipe ped2 --seeds 0 1 2 --out runs/effect_ped2
    python scripts/destroyer_effect.py --collect runs/a/eval runs/b/eval ...   (aggregate only)

Recipes: `demo` is `mama demo --seed S` (the synthetic dataset, written once with seed 0 and
reused, so only training changes with the seed); `ped2` is scripts/ped2_cpu.sh with SEED=S.
A seed whose metrics.json exists is not run again. No test label is used to choose anything.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODELS = ("generator", "generator+destroyer")


def run_seed(recipe: str, seed: int, out: Path, data_root: Path | None) -> Path:
    run = out / f"seed{seed}"
    metrics = run / "eval" / "metrics.json"
    if metrics.is_file():
        return metrics.parent
    mama = str(Path(sys.executable).with_name("mama"))
    if recipe == "demo":
        cmd = [mama, "demo", "--seed", str(seed), "--out", str(run), "--data-root", str(data_root or out / "data")]
        env = os.environ
    else:
        cmd = ["bash", str(REPO / "scripts" / "ped2_cpu.sh"), str(data_root or REPO.parent / "shared" / "datasets"), str(run)]
        env = {**os.environ, "SEED": str(seed), "MAMA": mama}
    print("$", " ".join(cmd), flush=True)
    with open(out / f"seed{seed}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return metrics.parent


def collect(eval_dirs: list[Path]) -> dict:
    """Per-seed clean-protocol AUCs and their summary."""
    per_seed = []
    for d in eval_dirs:
        result = json.loads((Path(d) / "metrics.json").read_text())
        rows = {(r["model"], r["smoothing"]): r["micro_auc"] for r in result["rows"] if r["protocol"] == "clean"}
        entry = {"run": str(d), "auc": {f"{m} sigma{s:g}": rows[(m, s)] for (m, s) in rows}}
        if "localisation" in result:
            entry["localisation"] = result["localisation"]
        if "ablation" in result:
            entry["ablation"] = {r["streams"]: r for r in result["ablation"]}
        per_seed.append(entry)
    summary = {}
    for key in per_seed[0]["auc"]:
        v = np.array([p["auc"][key] for p in per_seed])
        summary[key] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": v.tolist()}
    for sigma in sorted({k.split(" sigma")[1] for k in per_seed[0]["auc"]}, key=float):
        g, gd = (np.array([p["auc"][f"{m} sigma{sigma}"] for p in per_seed]) for m in MODELS)
        d = gd - g
        summary[f"destroyer effect sigma{sigma}"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                                                   "values": d.tolist()}
    if all("localisation" in p for p in per_seed):
        for key in ("damage_pixel_auroc", "generator_error_pixel_auroc", "damage_above_0.5_inside", "damage_above_0.5_outside"):
            v = np.array([p["localisation"][key] for p in per_seed])
            summary[f"localisation {key}"] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                                              "values": v.tolist()}
    return {"seeds": per_seed, "summary": summary}


def markdown(result: dict) -> str:
    lines = ["| figure | mean +- sd | per seed |", "|---|---|---|"]
    for key, s in result["summary"].items():
        lines.append(f"| {key} | {s['mean']:+.4f} +- {s['sd']:.4f} | {', '.join(f'{x:.4f}' for x in s['values'])} |"
                     if "effect" in key else
                     f"| {key} | {s['mean']:.4f} +- {s['sd']:.4f} | {', '.join(f'{x:.4f}' for x in s['values'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", choices=("demo", "ped2"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--data-root", type=Path, help="demo: where the synthetic dataset goes; ped2: the folder holding ped2/")
    ap.add_argument("--collect", type=Path, nargs="+", help="aggregate these eval folders instead of running")
    args = ap.parse_args()
    if args.collect:
        dirs = args.collect
    else:
        if not (args.recipe and args.out):
            ap.error("give --recipe and --out, or --collect")
        args.out.mkdir(parents=True, exist_ok=True)
        dirs = [run_seed(args.recipe, s, args.out, args.data_root) for s in args.seeds]
    result = collect(dirs)
    table = markdown(result)
    print(table)
    if args.out:
        (args.out / "effect.json").write_text(json.dumps(result, indent=1))
        (args.out / "effect.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
