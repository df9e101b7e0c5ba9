"""What `mama eval` writes into its run folder: metrics.json, scores.csv, a ROC plot,
per-video score curves with the abnormal ranges shaded, and report.html showing them."""
from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mama.data.datasets import label_intervals  # noqa: E402
from mama.evaluate.examples import MERGE_GAP, MIN_DURATION, Watch  # noqa: E402
from mama.evaluate.fusion import STREAMS  # noqa: E402
from mama.evaluate.localisation import DESTROYED  # noqa: E402
from mama.evaluate.picture import draw_frame  # noqa: E402
from mama.features.clips import INPUT_FRAMES  # noqa: E402
from mama.io import atomic_path  # noqa: E402

SHORT = {"generator": "G", "generator+destroyer": "G+D"}
LONG = {"generator": "the generator alone (G)", "generator+destroyer": "the full model, generator + destroyer (G+D)"}
METRICS = ("micro_auc", "macro_auc", "eer", "ap")


def headline(rows: list[dict]) -> dict:
    """The figure to quote: the full model (the last model evaluated), clean protocol, unsmoothed
    (a smoothed score uses later frames), no test label used; the nearest row to that when some
    is missing (another protocol, smoothing, or a model selected on test labels)."""
    scored = [r for r in rows if "_scores" in r]
    full = scored[-1]["model"]
    return max(scored, key=lambda r: (not r["test_labels_used"], r["model"] == full, r["protocol"] == "clean",
                                      r["smoothing"] == 0, r["protocol"] == "paper"))


def _smoothing(row: dict) -> str:
    if row["smoothing"] == 0:
        return "unsmoothed"
    if row["protocol"] == "online":
        return f"causally smoothed (sigma {row['smoothing']:g}, earlier frames only)"
    return f"smoothed (sigma {row['smoothing']:g}, which uses later frames)"


def headline_sentence(result: dict) -> str:
    """The report's first line, also printed by `mama eval` and `mama demo`: what was scored,
    how well, under which protocol, and whether any test label was used."""
    h = result["headline"]
    model = LONG.get(h["model"], h["model"])
    if not h["test_labels_used"]:
        labels = "no test label was used to choose the checkpoint or the fusion weights"
    elif result.get("checkpoint_selected_on_test"):
        labels = "TEST LABELS WERE USED: the checkpoint was selected on them"
    else:
        labels = f"TEST LABELS WERE USED: {h['weights_from']}"
    if "model card" in h.get("weights_from", ""):  # say what the fused score is without
        from mama.evaluate.card import STREAM_NAMES

        flagged = [STREAM_NAMES.get(s["name"], s["name"]) for s in (result.get("model_card") or {}).get("streams", [])
                   if s.get("flagged")]
        model += f", with its {' and '.join(flagged)} stream{'s' * (len(flagged) > 1)} left out by the model card,"
    return (f"{model[0].upper() + model[1:]} scores the {h['videos']} {result['dataset']} test videos "
            f"({h['frames']} frames, {h['abnormal_frames'] / h['frames']:.1%} abnormal) at a frame-level micro AUC of "
            f"{h['micro_auc']:.3f} under the {h['protocol']} protocol, {_smoothing(h)}; {labels}.")


def _num(x) -> str:
    """A figure as a person reads it: 3 decimals, yes/no, '-' for none."""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def same_figures(rows: list[dict]) -> list[list[dict]]:
    """The rows grouped where they differ only in their protocol's name (paper and clean, when
    no test label chose anything), in their first row's order: each is shown once, both named."""
    keys = ("model", "smoothing", "weights", "weights_from", "test_labels_used", *METRICS)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(_num(r.get(c)) for c in keys), []).append(r)
    return list(groups.values())


def write_report(out: Path, result: dict, rows: list[dict], videos, streams, labels, watched: Watch | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    head = headline(rows)
    result["headline"] = {k: v for k, v in head.items() if not k.startswith("_")}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2, default=float))

    # Per-frame scores: every stream, the headline's fused score, the label.
    names = [k for k in STREAMS if k in streams[0]]
    with atomic_path(out / "scores.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "frame", *names, "score", "label"])
        for v, s, fused, lab in zip(videos, streams, head["_scores"], labels):
            for i in range(len(lab)):
                w.writerow([v.name, i + INPUT_FRAMES, *(f"{s[n][i]:.6g}" for n in names), f"{fused[i]:.6g}", int(lab[i])])

    groups = same_figures(rows)
    _roc(out / "roc.png", groups, labels, head)
    _curves(out / "curves.png", videos, labels, head, watched)
    shots = _examples(out, videos, watched)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(_page(result, groups, head, watched, shots))


def _names(group: list[dict]) -> str:
    return " = ".join(r["protocol"] for r in group)


def _roc(path: Path, groups, labels, head: dict) -> None:
    """One line per distinct score at the headline's smoothing (rows giving the same figures share one)."""
    flat_l = np.concatenate(labels)
    fig, ax = plt.subplots(figsize=(5, 5))
    for group in groups:
        r = group[0]
        if "_scores" in r and r["smoothing"] == head["smoothing"] and not math.isnan(r["micro_auc"]):
            fpr, tpr, _ = roc_curve(flat_l, np.concatenate(r["_scores"]))
            oracle = "oracle" in r["weights_from"]
            ax.plot(fpr, tpr, ls=":" if oracle else "-", lw=2.2 if any(x is head for x in group) else 1.2,
                    label=f"{_names(group)} {SHORT.get(r['model'], r['model'])}{' (oracle)' if oracle else ''}: "
                          f"{r['micro_auc']:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance: 0.500")
    ax.set_xlabel("false positive rate (normal frames flagged)")
    ax.set_ylabel("true positive rate (abnormal frames flagged)")
    ax.set_title(f"frame-level ROC, all test frames pooled ({_smoothing(head)})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", title="protocol model: micro AUC", title_fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _curves(path: Path, videos, labels, head: dict, watched: Watch | None) -> None:
    """Each test video's score over its frames: `mama score`'s online score with its threshold
    and alarms when the online protocol ran, else the headline's score."""
    n = len(videos)
    cols = min(3, n)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.5 * rows_n + 0.6), squeeze=False)
    scores = watched.scores if watched is not None else head["_scores"]
    for i, (ax, v, s, lab) in enumerate(zip(axes.ravel(), videos, scores, labels)):
        x = np.arange(len(lab)) + INPUT_FRAMES
        for start, end in label_intervals(lab):  # 1-based inclusive runs of scored frames
            ax.axvspan(start - 1 + INPUT_FRAMES - 0.5, end - 1 + INPUT_FRAMES + 0.5, color="red", alpha=0.15, lw=0,
                       label="abnormal frames (ground truth)")
        ax.plot(x, s, lw=1, color="C0", label="score")
        title = f"video {v.name}"
        if watched is not None:
            ax.axhline(watched.threshold, color="black", ls="--", lw=0.9, label="alarm threshold")
            for first, last in watched.events[i]:
                ax.axvspan(first + INPUT_FRAMES - 0.5, last + INPUT_FRAMES + 0.5, ymin=0.93, ymax=1.0,
                           color="darkorange", lw=0, label="alarm raised")
            for k, ex in enumerate(watched.examples, 1):
                if ex.video == i:
                    ax.annotate(str(k), (ex.index + INPUT_FRAMES, ex.score), fontsize=7, ha="center",
                                xytext=(0, 6), textcoords="offset points",
                                bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "ec": "black", "lw": 0.6})
            title += f": {len(watched.events[i])} alarm{'s' if len(watched.events[i]) != 1 else ''}"
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("online score" if watched is not None else "score (0-1 per video)", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles = {}
    for ax in axes.ravel()[:n]:
        for h, name in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(name, h)
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _examples(out: Path, videos, watched: Watch | None) -> list[tuple[str, str]]:
    """The example frames drawn as `mama score` draws them: [(file name, caption)]."""
    if watched is None:
        return []
    shots = []
    for k, x in enumerate(watched.examples, 1):
        frame = x.index + INPUT_FRAMES
        image = draw_frame(x.image, x.amap, x.map_threshold, x.boxes or [], x.score, watched.threshold,
                           f"{videos[x.video].name} #{frame}")
        name = f"example_{k}.png"
        with atomic_path(out / name, suffix=".png") as tmp:
            cv2.imwrite(str(tmp), image)
        alarm = x.score > watched.threshold
        verdict = ("a false alarm" if alarm else "no alarm: even the most unusual normal frame stays below") \
            if not x.abnormal else ("caught" if alarm else "missed: below the threshold")
        shots.append((name, f"{k}. The {x.what}: video {videos[x.video].name}, frame {frame} "
                            f"({'abnormal' if x.abnormal else 'normal'}), score {x.score:.3f} against the threshold "
                            f"{watched.threshold:.3f}: {verdict}."))
    return shots


PROTOCOLS = {
    "paper": "the reference code's scoring: each test video's streams z-scored over the whole video, fused, then "
             "rescaled to 0-1 within the video, so a frame's score depends on the rest of its video, later frames too.",
    "clean": "the same computation, with the checkpoint and the fusion weights chosen without any test label.",
    "online": "as a live camera sees it (what <code>mama score</code> computes): z-scores from the normal training "
              "videos' statistics and only earlier frames.",
}
TERMS = [
    ("micro AUC", "area under the ROC curve of all test frames pooled: the chance that a random abnormal frame scores "
                  "above a random normal one (1 = perfect, 0.5 = chance). The field's headline figure."),
    ("macro AUC", "the mean of each video's own AUC (over the videos that have both kinds of frame)."),
    ("EER", "equal error rate: the share of frames misjudged at the threshold where false alarms and misses are "
            "equally frequent (0 = perfect, 0.5 = chance; lower is better)."),
    ("AP", "average precision: the area under the precision-recall curve. A random score gets the base rate, the "
           "share of abnormal frames ({base})."),
    ("smoothing sigma", "Gaussian smoothing of the score over frames (sigma in frames; 0 = none). Offline smoothing "
                        "uses later frames, so no live system can have it; the online protocol smooths over earlier "
                        "frames only."),
    ("fusion weights a,b,c,d", "how the four per-frame streams are added: a motion and b label bottleneck "
                               "similarities, c the generator's prediction error, d the destroyer's (0: not used)."),
    ("oracle", "weights grid-searched on the test labels, as the reference code does: an upper bound, not a result."),
]


def _table(head_cells: list[str], body: list[list[str]], classes: list[str] | None = None) -> str:
    trs = "".join(f"<tr{f' class={c!r}' if c else ''}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                  for row, c in zip(body, classes or [""] * len(body)))
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head_cells) + "</tr>" + trs + "</table>"


def _page(result: dict, groups, head: dict, watched: Watch | None, shots) -> str:
    e = html.escape
    base = head["abnormal_frames"] / head["frames"]
    body, classes, notes = [], [], []
    for group in groups:
        r, names = group[0], [x["protocol"] for x in group]
        # The weights' origin has its own column; a checkpoint chosen on test labels has none.
        used = "no" if not r["test_labels_used"] else "yes" if "oracle" in r["weights_from"] else \
            "yes: checkpoint selected on test labels"
        body.append([e(_names(group)), SHORT.get(r["model"], e(r["model"])), f"{r['smoothing']:g}",
                     *(_num(r.get(m)) for m in METRICS), e(r["weights"]), e(r["weights_from"]), used])
        classes.append("head" if any(x is head for x in group) else "oracle" if r["test_labels_used"] else "")
        if set(names) == {"paper", "clean"} and not notes:
            notes.append("<p class=note><b>paper = clean here</b>: the checkpoint was not selected on test labels and "
                         "the fusion weights did not come from them, so the two protocols are the same computation "
                         "and give the same figures; each is shown once.</p>")
    table = _table(["protocol", "model", "smoothing sigma", "micro AUC", "macro AUC", "EER",
                    f"AP (base rate {base:.3f})", "fusion weights a,b,c,d", "weights from", "test labels used"],
                   body, classes)
    terms = "".join(f"<dt>{e(t)}</dt><dd>{d.format(base=f'{base:.3f}') if t == 'AP' else d}</dd>" for t, d in TERMS)
    protocols = "".join(f"<dt>{p}</dt><dd>{d}</dd>" for p, d in PROTOCOLS.items())
    sections = [_model_card(result.get("model_card")), _alarms_section(watched, shots),
                _ablation(result.get("ablation")), _localisation(result.get("localisation"))]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mama eval: {e(result['dataset'])}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222;line-height:1.4}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
th{{background:#eee}}td:first-child{{white-space:nowrap}}tr.head td{{background:#fff6cc;font-weight:bold}}tr.oracle td{{color:#888}}
.headline{{font-size:1.25em;background:#f3f7ff;border-left:5px solid #36c;padding:.6em 1em}}
.flags{{background:#fff0f0;border-left:5px solid #c33;padding:.4em 1em}}.note{{font-size:13px;color:#444}}
dl{{font-size:13px;display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em}}dt{{font-weight:bold}}dd{{margin:0}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top;max-width:340px}}
figure img{{width:320px;image-rendering:pixelated;border:1px solid #999}}figcaption{{font-size:13px}}</style></head><body>
<h1>mama evaluation: {e(result['dataset'])}</h1>
<p class=headline id=headline>{e(headline_sentence(result))}</p>
{_flags(result.get("model_card"))}
<p>Checkpoint <code>{e(result['checkpoint'])}</code>, frames scored at {result['size']}x{result['size']}, motion from
<b>{e(result['motion'])}</b>, labels from <b>{e(result['labels'])}</b>; {len(result['videos'])} test videos,
{head['frames']} scored frames of which {head['abnormal_frames']} abnormal (base rate {base:.3f}). The first
{INPUT_FRAMES} frames of each video are the generator's inputs and are never scored.</p>
<h2>Every protocol</h2>
{table}
{''.join(notes)}
<p class=note>The highlighted row is the headline; grey rows used test labels. G: the generator alone; G+D: the full
model, generator + destroyer.</p>
<dl>{protocols}{terms}</dl>
{''.join(sections)}
<h2>ROC</h2><img src="roc.png" alt="ROC curves">
<p><a href="scores.csv">scores.csv</a>: every frame's streams, the headline's score and its label;
<a href="metrics.json">metrics.json</a>: every figure on this page.</p>
</body></html>
"""


def _alarms_section(watched: Watch | None, shots) -> str:
    if watched is None:
        return ("<h2>Scores per video</h2><p>The headline's score of each frame (red: abnormal frames). No alarm "
                "threshold: the online protocol, which has one, was not run.</p>"
                '<img src="curves.png" alt="per-video score curves" style="max-width:100%">')
    q = watched.quantile
    share = html.escape(watched.threshold_from) if q is None else (
        f"the {q:.1%} quantile of the online score over the normal training frames, so about {1 - q:.1%} of those "
        "frames lie above it")
    count = sum(len(ev) for ev in watched.events)
    figures = "".join(f'<figure><img src="{n}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption></figure>'
                      for n, c in shots)
    return f"""<h2>Scores per video, with the alarms <code>mama score</code> would raise</h2>
<p>Blue: each frame's online score (the checkpoint's own calibration). Dashed: the alarm threshold
{watched.threshold:.3f}, the one <code>mama score</code> uses when given none: {share}. No test label chose it.
Orange band: an alarm, raised once {MIN_DURATION} frames in a row are above the threshold and ended after
{MERGE_GAP} frames below it ({count} in all). Red shading: the abnormal frames. Circled numbers: the example frames below.</p>
<img src="curves.png" alt="per-video score curves with the threshold and the alarms" style="max-width:100%">
<h2>Example frames</h2>
<p class=note>Drawn as <code>mama score</code> draws them: colour where the anomaly map is unusual for that pixel
(from half the map's threshold up), red boxes round the regions above it, and at the bottom the score as a bar
against the alarm threshold (the white tick; red when it alarms).</p>
{figures}"""


def _flags(card: dict | None) -> str:
    """The model card's flags, plain sentences shown under the headline: what to fix before trusting the figure."""
    if not card or not card.get("flags"):
        return ""
    items = "".join(f"<li>{html.escape(str(f))}</li>" for f in card["flags"])
    return f"<div class=flags id=flags><b>Model card flags</b><ul>{items}</ul></div>"


def _model_card(card: dict | None) -> str:
    """The checkpoint's model card (written at training): how it was chosen, what each stream and the fusion do."""
    if not card:
        return ""
    e = html.escape
    parts = ["<h2>Model card</h2>"]
    if card.get("flags"):
        parts.append("<p>Its flags are at the top of this page.</p>")
    ck = card.get("checkpoint") or {}
    if ck:
        parts.append(f"<p>Checkpoint of step {e(str(ck.get('step', '?')))}"
                     + (f", chosen because {e(str(ck['why']))}" if ck.get("why") else "") + ".</p>")
    if card.get("streams"):
        body = [[e(str(s.get("name", "?"))), _num(s.get("auc")),
                 e(", ".join(f"{k} {_num(v)}" for k, v in (s.get("per_kind") or {}).items())) or "-",
                 "<b>yes</b>" if s.get("flagged") else "no"] for s in card["streams"]]
        parts.append(_table(["stream", "pseudo-anomaly AUC", "per kind of pseudo-anomaly", "flagged"], body))
        parts.append("<p class=note>Pseudo-anomaly AUC: how well the stream alone separates normal training clips "
                     "from pseudo-anomalies made from them (no test video, no test label); 0.5 is chance.</p>")
    fu = card.get("fusion") or {}
    if fu:
        parts.append(f"<p>Fusion weights a,b,c,d <b>{e(str(fu.get('weights', '?')))}</b>"
                     + (f", from {e(str(fu['from']))}" if fu.get("from") else "")
                     + (f"; pseudo-anomaly AUC {_num(fu['auc'])}" if "auc" in fu else "") + ".</p>")
    return "".join(parts)


def _ablation(ablation: list[dict] | None) -> str:
    if not ablation:
        return ""
    keys = [k for k in ablation[0] if k.startswith("micro_auc")]
    heads = ["micro AUC, unsmoothed" if k == "micro_auc" else f"micro AUC, smoothed (sigma {k.split('sigma')[-1]})"
             for k in keys]
    body = [[html.escape(r["streams"]), html.escape(r["weights"]), *(_num(r[k]) for k in keys)] for r in ablation]
    return ("<h2>Which streams help</h2><p>The same scores re-fused from subsets of the paper's fusion (per-video "
            "normalisation, no retraining, no test label used).</p>" + _table(["streams fused", "fusion weights a,b,c,d", *heads], body))


def _localisation(loc: dict | None) -> str:
    if not loc:
        return ""
    d = f"{DESTROYED:g}"
    rows = [("pixel AUROC: anomalous pixels above normal ones (0.5 = chance)", "pixel_auroc"),
            ("mean value inside the anomalies", "mean_inside"), ("mean value elsewhere", "mean_outside"),
            (f"share of anomalous pixels above {d}", f"above_{d}_inside"),
            (f"share of other pixels above {d}", f"above_{d}_outside"),
            (f"share of the pixels above {d} that are anomalous", f"share_of_pixels_above_{d}_in_anomalies")]
    body = [[label, _num(loc.get(f"damage_{k}")), _num(loc.get(f"generator_error_{k}"))] for label, k in rows]
    share = loc["anomalous_pixels"] / max(loc["anomalous_pixels"] + loc["normal_pixels"], 1)
    return ("<h2>Where: does the destroyer destroy the anomalies?</h2><p>Each scored frame's destroyer damage "
            "|destroyed - prediction| and generator error |prediction - frame| against the test videos' pixel masks "
            f"({loc['anomalous_pixels']} anomalous pixels, {share:.1%} of all). Values are in the frame's [-1, 1] "
            f"units; above {d} a pixel counts as destroyed.</p>"
            + _table(["", "destroyer damage", "generator error"], body))
