"""`mama eval`: score every test frame once, then report every protocol in one table.

Protocols (each row says which, and whether any test label was used):
  paper   the reference code's offline normalisation: per video z-score, fusion, min-max,
          optional Gaussian smoothing. With --oracle, its fusion weights are grid-searched on
          the TEST labels, as the reference code does: reported as "oracle (tuned on test labels)".
  clean   the same normalisation, with a checkpoint and fusion weights chosen without test
          labels (fixed in advance for the run's providers, less the streams its model card
          flagged; --weights; or --fit-weights on training video).
  online  causal: z-scores from the normal training videos' statistics (stored in the
          checkpoint by `mama train`), causal smoothing; a frame's score never uses later frames.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from mama import metrics
from mama.config import ONLINE_SIGMA, PROTOCOLS, EvalOptions, feature_dir  # noqa: F401  (PROTOCOLS: the CLI's choices)
from mama.data.datasets import check_frame_files, make_samples
from mama.errors import MamaError
from mama.evaluate.calibrate import effective_weights, scene_background
from mama.evaluate.engine import Scorer
from mama.evaluate.examples import watch
from mama.features.clips import INPUT_FRAMES
from mama.evaluate.fusion import (
    GENERATOR_STREAMS,
    PAPER_WEIGHTS,
    FusionWeights,
    clean_weights,
    StreamStats,
    fuse_offline,
    fuse_online,
    search_weights,
)
from mama.evaluate.localisation import check_masks, localisation, mask_dir
from mama.evaluate.streams import sharded_video_streams
from mama.evaluate.card import card_lines
from mama.evaluate.validation import PSEUDO_KINDS, PseudoAnomalyValidator
from mama.features.registry import build_extractor
from mama.io import check_output_folder, output_folder
from mama.models.build import models_from_run
from mama.models.checkpoint import read_file
from mama.runtime import setup_runtime, teardown_runtime



FIT_CLIPS = 64  # clips per kind (normal, each pseudo-anomaly) that --fit-weights fits on


def stream_ablation(streams: list[dict], labels: list[np.ndarray], weights: FusionWeights, sigma: float) -> list[dict]:
    """Micro AUC of the offline fusion of subsets of the same streams (no retraining): the
    prediction error alone, with the bottleneck terms, with the destroyer, and the destroyer's
    own stream; each with and without smoothing."""
    has_d = "destroyer_sse" in streams[0]
    w = effective_weights(weights, streams[0])
    variants = [("sse", FusionWeights(sse=1)), ("sse + sim terms", w.without_destroyer())]
    if has_d:
        variants += [("sse + sim terms + destroyer", w), ("sse + destroyer", w.without(*GENERATOR_STREAMS[:2])),
                     ("destroyer alone", FusionWeights(destroyer_sse=1))]
    rows = []
    for name, vw in variants:
        row = {"streams": name, "weights": str(vw)}
        for s in (0.0, sigma) if sigma > 0 else (0.0,):
            fused = [fuse_offline(v, vw, s) for v in streams]
            row["micro_auc" if s == 0 else f"micro_auc_sigma{s:g}"] = metrics.summarize(fused, labels)["micro_auc"]
        rows.append(row)
    return rows


def _rows_for(name, protocol, weights, tag, streams, labels, sigma, fuse, labels_used) -> list[dict]:
    rows = []
    for s in (0.0, sigma) if sigma > 0 else (0.0,):
        fused = [fuse(v, weights, s) for v in streams]
        rows.append({
            "protocol": protocol,
            "model": name,
            "weights": str(weights),
            "weights_from": tag,
            "smoothing": s,
            "test_labels_used": labels_used,
            **metrics.summarize(fused, labels),
            "_scores": fused,
        })
    return rows


def _test_videos(opts: EvalOptions) -> tuple[list, list[np.ndarray]]:
    """The test videos and each one's labels of the frames scored, refused unless `mama eval` can
    report on them (every video labelled, both kinds of frames, every frame file readable)."""
    videos = make_samples(opts.dataset, Path(opts.data_root), "testing")
    unlabeled = [v.name for v in videos if v.labels is None]
    if unlabeled:
        raise MamaError(
            f"test videos {', '.join(unlabeled[:5])} of {opts.data_root}/{opts.dataset} have no labels; "
            "`mama eval` needs ground truth (use `mama score` to score unlabeled video)"
        )
    check_frame_files(videos)  # a bad frame is found before the scoring, not at its end
    labels = [v.labels[INPUT_FRAMES:] for v in videos]
    flat = np.concatenate(labels)
    if flat.min() == flat.max():
        raise MamaError(
            f"every scored test frame of {opts.data_root}/{opts.dataset} is {'abnormal' if flat[0] else 'normal'} "
            f"(the first {INPUT_FRAMES} frames of each video are never scored); frame-level AUC needs both kinds"
        )
    return videos, labels


def _given_weights(opts: EvalOptions, meta: dict, card: dict | None) -> tuple[tuple[FusionWeights, str], tuple[FusionWeights, str]]:
    """(weights, where from) of the paper protocol and of the clean one. The paper protocol fuses
    as the paper does; the clean one (and the online one, as `mama score`) with the weights fixed
    in advance for these providers, less the streams the model card flagged."""
    if opts.weights:
        return (opts.weights, "given (--weights)"), (opts.weights, "given (--weights)")
    clean = clean_weights(meta["motion"], meta["labels"]), "fixed in advance for these providers"
    if card is not None and card.get("flags"):
        clean = FusionWeights.parse(card["fusion"]["weights"]), "model card (flagged streams left out)"
    return (PAPER_WEIGHTS, "the paper's (fixed in advance)"), clean


def _fitted_weights(opts: EvalOptions, scorer: Scorer, size: int, variants) -> dict[str, FusionWeights]:
    """--fit-weights: each variant's weights that best separate normal training clips from
    pseudo-anomalous ones made from them (mama.evaluate.validation): no test label."""
    if not opts.fit_weights:
        return {}
    train_videos = make_samples(opts.dataset, Path(opts.data_root), "training")
    pseudo = PseudoAnomalyValidator(scorer.extractor, train_videos, size, FIT_CLIPS, PSEUDO_KINDS, seed=0,
                                    device=scorer.device)
    # The generator-only scorer reuses the inference copies the first one made.
    return {name: pseudo.fit_weights(scorer if with_d else replace(scorer, destroyer=None), with_d)[0]
            for name, with_d in variants}


def _variant_rows(opts: EvalOptions, name: str, with_d: bool, given, fitted: dict, streams, on_streams, labels,
                  calib: dict | None, selected_on_test: bool) -> list[dict]:
    """The rows of every protocol asked for, for one model variant (generator, or with the destroyer)."""
    def pick(weights: FusionWeights, tag: str) -> tuple[FusionWeights, str]:
        if name in fitted:
            weights, tag = fitted[name], "fitted on training video (--fit-weights)"
        return effective_weights(weights if with_d else weights.without_destroyer(), streams[0]), tag

    (w, tag), (wc, tag_c) = pick(*given[0]), pick(*given[1])
    rows: list[dict] = []
    if "paper" in opts.protocols:
        rows += _rows_for(name, "paper", w, tag, streams, labels, opts.sigma, fuse_offline, selected_on_test)
        if opts.oracle:
            best, _ = search_weights(streams, labels, with_d)
            rows += _rows_for(name, "paper", effective_weights(best, streams[0]), "oracle (tuned on test labels)",
                              streams, labels, opts.sigma, fuse_offline, True)
    if "clean" in opts.protocols:
        if selected_on_test:
            tag_clean = "REFUSED: checkpoint was selected on test labels (--select-on-test)"
            rows.append({"protocol": "clean", "model": name, "weights": str(wc), "weights_from": tag_clean,
                         "smoothing": 0.0, "test_labels_used": True, "micro_auc": float("nan"),
                         "macro_auc": float("nan"), "eer": float("nan"), "ap": float("nan")})
        else:
            rows += _rows_for(name, "clean", wc, tag_c, streams, labels, opts.sigma, fuse_offline, False)
    if "online" in opts.protocols:
        stats = StreamStats(calib["stats"]["mean"], calib["stats"]["std"])
        wo = effective_weights(wc, {k: 0 for k in stats.mean})
        sigma = calib.get("sigma", ONLINE_SIGMA)  # an older checkpoint that stored none: the default
        rows += _rows_for(name, "online", wo, tag_c, on_streams, labels, sigma,
                          lambda v, ww, s: fuse_online(v, ww, stats, s), selected_on_test)
    return rows


def _online_streams(opts: EvalOptions, rt, scorer: Scorer, videos, size: int, streams, calib: dict | None):
    """(streams, background) the online protocol fuses: `streams`, or where the providers need the
    scene's background, the test videos scored again against it (the calibration's, else the
    training videos')."""
    if "online" in opts.protocols and calib is None:
        raise MamaError(
            f"{opts.checkpoint} has no calibration (a reference-code checkpoint?); the online protocol "
            "needs one: run `mama eval --protocol paper` or `--protocol clean`, or calibrate by training with mama"
        )
    if "online" not in opts.protocols or not scorer.extractor.needs_background:
        return streams, None
    on_bg = calib.get("background")
    on_bg = on_bg.numpy() if on_bg is not None else scene_background(make_samples(opts.dataset, Path(opts.data_root), "training"), size)
    return sharded_video_streams(rt, scorer, videos, size, background=on_bg, description="online pass"), on_bg


def _result(opts: EvalOptions, meta: dict, size: int, videos, rows: list[dict], ablation: list[dict],
            selected_on_test: bool, card: dict | None, local: dict | None) -> dict:
    """What `mama eval` returns and writes as metrics.json (the report adds its headline)."""
    result = {
        "dataset": opts.dataset,
        "checkpoint": str(opts.checkpoint),
        "checkpoint_selected_on_test": selected_on_test,
        "size": size,
        "motion": meta["motion"],
        "labels": meta["labels"],
        "videos": [v.name for v in videos],
        "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "ablation": ablation,
    }
    if card is not None:
        result["model_card"] = card
    if local is not None:
        result["localisation"] = local
    return result


def evaluate(opts: EvalOptions) -> dict:
    """Score the test videos (shared out between torchrun's ranks), then on the main rank report
    every protocol asked for (the rows of `_variant_rows`), the stream ablation, localisation and
    the online protocol's alarms, and write the report to `opts.out`."""
    check_output_folder(opts.out)
    payload = read_file(opts.checkpoint, "run")
    net_g, net_a, meta = models_from_run(payload, opts.checkpoint, need_destroyer=False)
    size = opts.size or meta["size"]
    rt = setup_runtime(opts.device)  # under torchrun the test videos are shared out between ranks
    device = rt.device
    extractor = build_extractor(meta["motion"], meta["labels"], device, opts.motion_weights, opts.label_weights)
    net_g.to(device).eval()
    if net_a is not None:
        net_a.to(device).eval()
    videos, labels = _test_videos(opts)
    with_masks = net_a is not None and check_masks(mask_dir(opts.data_root, opts.dataset), videos)
    scorer = Scorer(net_g, extractor, net_a, device, batch_size=opts.batch_size, amp=opts.amp, compile=opts.compile,
                    feature_dir=feature_dir(opts.feature_store))
    streams = sharded_video_streams(rt, scorer, videos, size, description="test videos")
    calib = payload.get("calibration")
    selected_on_test = bool(payload.get("config", {}).get("select_on_test", False))
    on_streams, on_bg = _online_streams(opts, rt, scorer, videos, size, streams, calib)
    if not rt.is_main:
        teardown_runtime(rt)
        return {}

    variants = [("generator", False)] + ([("generator+destroyer", True)] if net_a is not None else [])
    card = payload.get("card")
    if card is not None:
        for line in card_lines(card):
            print(line)
    given = _given_weights(opts, meta, card)
    fitted = _fitted_weights(opts, scorer, size, variants)
    rows = [r for name, with_d in variants
            for r in _variant_rows(opts, name, with_d, given, fitted, streams, on_streams, labels, calib, selected_on_test)]
    ablation = stream_ablation(streams, labels, fitted.get("generator+destroyer", given[0][0]), opts.sigma)
    local = localisation(scorer, videos, size, mask_dir(opts.data_root, opts.dataset)) if with_masks else None
    result = _result(opts, meta, size, videos, rows, ablation, selected_on_test, card, local)
    # The report's alarms and example frames: what `mama score` would do, so online scores only.
    watched = watch(calib, scorer, videos, on_streams, labels, size, on_bg) if "online" in opts.protocols else None
    if watched is not None:
        result["alarms"] = watched.summary(videos)
    from mama.evaluate.report import write_report

    with output_folder(opts.out):
        write_report(opts.out, result, rows, videos, streams, labels, watched)
    teardown_runtime(rt)
    return result
