"""Does the label-free proxy (mama.evaluate.validation) rank what it chooses as the test AUC does?

For one run trained with kept checkpoints (`KEEP=10 bash scripts/ped2_cpu.sh ...`), for each
stage:
  checkpoints  the proxy (mean over pseudo-anomaly kinds of the AUC, clean fusion) and the
               clean protocol's unsmoothed micro AUC on the labelled test videos, per checkpoint;
               Spearman's rho between them (overall and per kind);
  weights      the same two figures for every weighting of the reference grid (plus the
               sse-leaning candidates) on the stage's last checkpoint; Spearman's rho, and the
               test AUC of the weights the proxy picks next to the fixed defaults and sse alone;
  streams      each stream alone: its proxy and test AUC, and the streams' correlations on the
               test videos' normal frames (why the sim terms help or hurt).
The test labels are read here to VALIDATE the proxy once; nothing here is a default.

    .venv/bin/python scripts/proxy_study.py runs/study/s0 --data-root data \
        --out benchmarks/results/proxy_study_s0.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mama import metrics
from mama.data.datasets import make_samples
from mama.evaluate.calibrate import effective_weights
from mama.evaluate.card import alone, stream_aucs
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import PAPER_WEIGHTS, STREAMS, FusionWeights, clean_weights, fuse_offline, grid_aucs
from mama.evaluate.streams import video_streams
from mama.evaluate.validation import PSEUDO_KINDS, PseudoAnomalyValidator, fusion_candidates
from mama.features.clips import INPUT_FRAMES
from mama.features.registry import build_extractor
from mama.io import cache_folder
from mama.models.build import models_from_run
from mama.models.checkpoint import read_file



def rho(x, y) -> float:
    return float(spearmanr(x, y).statistic)


def scorer_for(path: Path, extractor) -> tuple[Scorer, dict]:
    payload = read_file(path, "run")
    net_g, net_a, meta = models_from_run(payload, path, need_destroyer=False)
    net_g.eval()
    if net_a is not None:
        net_a.eval()
    return Scorer(net_g, extractor, net_a, torch.device("cpu"), feature_dir=cache_folder("features")), payload


def test_auc(streams, labels, weights: FusionWeights) -> float:
    w = effective_weights(weights, streams[0])
    return metrics.summarize([fuse_offline(v, w) for v in streams], labels)["micro_auc"]


def stage_study(stage_dir: Path, tests, labels, train_videos, extractor, size: int, seed: int, fusion: FusionWeights) -> dict:
    kept = sorted(stage_dir.glob("step_*.pt"))
    validator = PseudoAnomalyValidator(extractor, train_videos, size, 64, PSEUDO_KINDS, seed)
    rows = []
    last = None
    for path in kept:
        scorer, payload = scorer_for(path, extractor)
        pseudo = validator.streams(scorer)
        streams = video_streams(scorer, tests, size, progress=False)
        w = effective_weights(fusion, streams[0])
        per_kind = {k: float(v[0]) for k, v in validator.kind_aucs(pseudo, [w]).items()}
        rows.append({"checkpoint": path.name, "step": int(payload["step"]), "proxy": float(np.mean(list(per_kind.values()))),
                     "proxy_per_kind": per_kind, "test_auc": test_auc(streams, labels, w),
                     "test_auc_sse": test_auc(streams, labels, alone("sse"))})
        print(f"{stage_dir.name} {path.name}: proxy {rows[-1]['proxy']:.3f}  test {rows[-1]['test_auc']:.3f}", flush=True)
        last = (pseudo, streams)
    out = {"checkpoints": rows,
           "spearman_checkpoints": rho([r["proxy"] for r in rows], [r["test_auc"] for r in rows]),
           "spearman_checkpoints_per_kind": {k: rho([r["proxy_per_kind"][k] for r in rows], [r["test_auc"] for r in rows])
                                             for k in rows[0]["proxy_per_kind"]}}
    pseudo, streams = last
    with_d = "destroyer_sse" in streams[0]
    grid = list(dict.fromkeys(effective_weights(g, streams[0]) for g in fusion_candidates(with_d)))
    per_kind = validator.kind_aucs(pseudo, grid)
    proxy = np.mean(list(per_kind.values()), axis=0)
    truth = grid_aucs(streams, labels, grid)
    pick = int(np.argmax(proxy))
    default = effective_weights(fusion, streams[0])
    paper = effective_weights(PAPER_WEIGHTS, streams[0])
    out["weights"] = {
        "candidates": len(grid), "spearman": rho(proxy, truth),
        "spearman_per_kind": {k: rho(v, truth) for k, v in per_kind.items()},
        "proxy_pick": {"weights": str(grid[pick]), "proxy": float(proxy[pick]), "test_auc": float(truth[pick])},
        "default": {"weights": str(default), "proxy": float(validator.proxy(pseudo, [default])[0]),
                    "test_auc": test_auc(streams, labels, default)},
        "paper": {"weights": str(paper), "proxy": float(validator.proxy(pseudo, [paper])[0]),
                  "test_auc": test_auc(streams, labels, paper)},
        "test_auc_range": [float(truth.min()), float(truth.max())],
    }
    present = [n for n in STREAMS if n in streams[0]]
    out["streams"] = {n: {"proxy": proxy_alone, "proxy_per_kind": per_kind_alone,
                          "test_auc": test_auc(streams, labels, alone(n)),
                          "test_auc_per_video": [metrics.summarize([v[n]], [y])["micro_auc"] if 0 < y.mean() < 1 else None
                                                 for v, y in zip(streams, labels)]}
                      for n, (proxy_alone, per_kind_alone) in stream_aucs(validator, pseudo).items()}
    normal = np.concatenate([y == 0 for y in labels])
    joined = np.stack([np.concatenate([v[n] for v in streams])[normal] for n in present])
    out["stream_correlation_normal_frames"] = {"streams": present, "spearman": spearmanr(joined, axis=1).statistic.tolist()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--dataset", default="ped2")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    config = json.loads((a.run / "generator" / "config_generator.json").read_text())
    size = config["size"]
    extractor = build_extractor(config["motion"], config["labels"], "cpu")
    tests = make_samples(a.dataset, Path(a.data_root), "testing")
    labels = [v.labels[INPUT_FRAMES:] for v in tests]
    train_videos = make_samples(a.dataset, Path(a.data_root), "training")
    result = {"run": str(a.run), "dataset": a.dataset, "test_videos": [v.name for v in tests], "kinds": list(PSEUDO_KINDS),
              "note": "test labels used to validate the label-free proxy only; nothing here is chosen on them"}
    for stage in ("generator", "destroyer"):
        result[stage] = stage_study(a.run / stage, tests, labels, train_videos, extractor, size, config["seed"],
                                    clean_weights(config["motion"], config["labels"]))
        print(stage, "rho checkpoints", round(result[stage]["spearman_checkpoints"], 3),
              "rho weights", round(result[stage]["weights"]["spearman"], 3), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
