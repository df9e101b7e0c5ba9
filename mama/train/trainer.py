"""The two training stages (docs/design.md), single process or under torchrun (DDP).

Stage 1, generator: F2LM generator + PatchGAN discriminator on clips of normal video.
  G loss = intensity + gradient + 0.05 * LSGAN adversarial + sim_motion + sim_label.
Stage 2, destroyer: U-Net over the frozen generator's predictions with synthetic patch
  damage, trained with the patch-destroy loss.
Both: batches of distinct videos with clips balanced per video (the reference's sampling),
AdamW, progress bar, TensorBoard + JSON-lines log, atomic checkpoints (latest, best, final;
periodic), a label-free checkpoint choice (mama.evaluate.validation), exact resume (models,
optimisers, step, RNG, sampler position), a clean stop on SIGINT/SIGTERM, a NaN/inf loss
stops the run keeping the last good checkpoint, and at the end a calibration of the score
streams on normal videos for `mama score`. With `batchnorm="eval-after-validation"` (the
paper preset) the trained network runs its BatchNorm in eval mode from the first
validation on, as the reference code's does (mama.config).

A stage is built from its parts (`GeneratorParts`, `DestroyerParts`: the feature extractor,
the networks and what built them), made from the config unless they are handed in.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from mama import ops
from mama.config import BASE_WIDTH, DAMAGE_RANGE, DEFAULT_PRESET, INHERITED_FROM_GENERATOR, TrainConfig
from mama.data.datasets import ClipDataset, VideoBalancedSampler, check_frame_files, make_samples
from mama.data.resident import ResidentFrames, fits_on, resident_bytes
from mama.errors import MamaError
from mama.evaluate.calibrate import calibrate
from mama.evaluate.card import card_lines, model_card
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights, clean_weights
from mama.evaluate.validation import PSEUDO_KINDS, PseudoAnomalyValidator, check_pseudo_anomalies, test_set_auc
from mama.features.clips import INPUT_FRAMES
from mama.features.extractor import FeatureExtractor
from mama.features.registry import build_extractor
from mama.features.store import DatasetSource, FeatureStore, FrameSource, feature_shards
from mama.io import cache_folder, check_output_folder, output_folder
from mama.models.build import models_from_run, run_meta
from mama.models.checkpoint import read_file, save_checkpoint
from mama.models.destroyer import Destroyer
from mama.models.discriminator import PatchDiscriminator
from mama.models.generator import F2LMGenerator
from mama.models.inference import copies_pay, prepare_for_inference
from mama.models.scores import bottleneck_sims
from mama.runtime import Runtime, StopRequest, compile_model, setup_runtime, share_cpu, teardown_runtime
from mama.train import losses
from mama.train.session import RunLog, rng_state, seed_everything, set_rng_state

CHECKPOINT_FORMAT = "mama-run-1"
# What a resumed run must share with the run it continues (else the weights, the data order or
# the recorded config would not fit).
RESUME_MUST_MATCH = ("dataset", "preset", "motion", "labels", "size", "base", "batch_size", "seed", "patch", "holdout")
FEATURE_BUDGET = 4 << 30  # bytes of training features kept in memory (feature_store "memory")
# ... and beside a store on disk, the most recently used (the rest is read back from disk), so
# memory does not grow with the length of the footage.
DISK_MEMORY_BUDGET = 128 << 20
# A step's losses stay on the device (reading one back waits for the step to finish); they are
# read back together every READBACK_EVERY steps (the steps logged, with the first and the last)
# and before a validation, a save or a stop.
READBACK_EVERY = 10


def adamw(net: nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW as the reference configures it; `fused` (on CUDA): one kernel for every parameter."""
    if fused:
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)


def as_floats(scalars: dict) -> dict:
    """A step's figures (device tensors and floats) as floats, read back in one transfer."""
    tensors = [v.detach().float().reshape(()) for v in scalars.values() if torch.is_tensor(v)]
    values = iter(torch.stack(tensors).cpu().tolist() if tensors else [])
    return {k: next(values) if torch.is_tensor(v) else float(v) for k, v in scalars.items()}


def discriminator_widths(base: int) -> tuple[int, ...]:
    """The discriminator's widths scale with the generator's (paper: base 64 -> 128-256-512-512)."""
    return tuple(w * base // BASE_WIDTH for w in (128, 256, 512, 512))


@dataclass
class GeneratorParts:
    """What the generator stage trains and reads with, and the record of what built it."""

    extractor: FeatureExtractor
    net_g: F2LMGenerator
    net_d: PatchDiscriminator
    meta: dict  # stored in checkpoints under 'model'

    @classmethod
    def from_config(cls, c: TrainConfig, device) -> "GeneratorParts":
        extractor = build_extractor(c.motion, c.labels, device, c.motion_weights, c.label_weights)
        label_channels = INPUT_FRAMES * (extractor.labels.channels if extractor.labels is not None else 0)
        net_g = F2LMGenerator(label_channels=label_channels, base=c.base)
        net_d = PatchDiscriminator(widths=discriminator_widths(c.base))
        meta = {"base": c.base, "label_channels": label_channels, "motion": c.motion,
                "labels": c.labels, "size": c.size, "dataset": c.dataset}
        return cls(extractor, net_g, net_d, meta)


@dataclass
class DestroyerParts:
    """The frozen generator and its providers, the destroyer to train, what built them."""

    extractor: FeatureExtractor
    net_g: F2LMGenerator
    net_a: Destroyer
    meta: dict

    @classmethod
    def from_config(cls, c: TrainConfig, device, generator: dict) -> "DestroyerParts":
        """`generator`: the generator checkpoint's payload; `c` has inherited its settings."""
        net_g, _, meta = models_from_run(generator, c.generator, need_destroyer=False)
        extractor = build_extractor(meta["motion"], meta["labels"], device, c.motion_weights, c.label_weights)
        return cls(extractor, net_g, Destroyer(base=c.base), {**meta, "destroyer_base": c.base})


def generator_checkpoint(c: TrainConfig) -> dict:
    if not c.generator:
        raise MamaError("the destroyer stage needs --generator CKPT (a trained generator's final.pt or best.pt)")
    payload = read_file(c.generator, "run")
    if payload.get("stage") == "destroyer" or "net_a" in payload:
        print(f"note: --generator {c.generator} is a destroyer-stage checkpoint; a new destroyer is trained on "
              "the generator it holds (its own destroyer is not used)")
    return payload


def inherit_generator(c: TrainConfig, generator: dict) -> TrainConfig:
    """The destroyer stage's config with the generator run's preset, providers, frame size and
    width where none is given; a given one that differs is an error (the generator's inputs
    must mean what they meant when it was trained)."""
    meta = run_meta(generator, c.generator)
    theirs = {"preset": (generator.get("config") or {}).get("preset", DEFAULT_PRESET), "motion": meta["motion"],
              "labels": meta["labels"], "size": meta["size"], "base": meta["base"]}
    for name in INHERITED_FROM_GENERATOR:
        ours = getattr(c, name)
        if ours is not None and ours != theirs[name]:
            flag = "--" + name.replace("_", "-")
            raise MamaError(f"{flag} {ours} conflicts with the generator {c.generator}, trained with {flag} {theirs[name]}; "
                            f"drop {flag} (the destroyer stage takes the generator's)")
    return dataclasses.replace(c, **theirs)


class RankShard(torch.utils.data.Sampler):
    """The shared endless clip order, split across DDP ranks (rank r takes every world-th)."""

    def __init__(self, sampler: VideoBalancedSampler, rank: int, world: int):
        self.sampler, self.rank, self.world = sampler, rank, world

    def __iter__(self):
        for i, idx in enumerate(self.sampler):
            if i % self.world == self.rank:
                yield idx


def _unwrap(m: nn.Module) -> nn.Module:
    m = m.module if isinstance(m, DDP) else m
    return getattr(m, "_orig_mod", m)


class Trainer:
    """Shared machinery of both stages; subclasses define their parts, one step and scoring."""

    stage = ""

    def __init__(self, cfg: TrainConfig, parts, source: FrameSource | None = None):
        self.cfg = cfg.resolved()
        self.rt: Runtime = setup_runtime(self.cfg.device)
        # Asked for by name (not by the preset) where they do nothing: an error, not silently dropped.
        if cfg.compile and self.rt.device.type not in self.compile_devices:
            raise MamaError(f"--compile compiles the training step on {' or '.join(self.compile_devices)} only (on "
                            f"{self.rt.device.type} its compile time is not won back); drop --compile, or train on CUDA")
        if cfg.amp and self.rt.device.type != "cuda":
            raise MamaError(f"--amp (bf16 autocast) trains on CUDA only; drop --amp to train on {self.rt.device.type}")
        share_cpu(self.rt, self.cfg.num_workers)
        seed_everything(self.cfg.seed + self.rt.rank)  # before any network is initialised
        self.parts = parts if parts is not None else self.build_parts()
        self.extractor = self.parts.extractor
        self.model_meta = self.parts.meta
        self.resident: ResidentFrames | None = None  # the training frames on the device (run() decides)
        self.loader: DataLoader | None = None  # ... or the loader that reads them (made by run())
        self.store = None if source is None else self._store(source)  # else: the dataset's, made by run()
        self.run_dir = Path(self.cfg.out)
        self.step = 0
        self.best: float | None = None
        self._last_saved = 0  # step of the newest latest.pt (named in the NaN message)
        self.log: RunLog | None = None  # opened by run(), once every input has been checked

    # ------------------------------------------------------------------ data
    def _data(self):
        c = self.cfg
        videos = make_samples(c.dataset, Path(c.data_root), "training")
        check_frame_files(videos)  # a bad frame is found now, not by a batch hours in
        # `holdout` videos (the fast preset's last one) are kept out of training for validation and
        # calibration, when there are enough to spare; the paper preset trains on all of them.
        held = c.holdout if len(videos) > c.holdout + 1 else 0
        self.train_videos = videos[: len(videos) - held]
        self.val_videos = videos[len(videos) - held :] or self.train_videos
        if not c.select_on_test:
            check_pseudo_anomalies(self.val_videos, PSEUDO_KINDS)
        self.dataset = ClipDataset(self.train_videos, size=(c.size, c.size))
        if c.batch_size * self.rt.world_size > len(self.dataset):
            per = " per process" if self.rt.distributed else ""
            raise MamaError(f"--batch-size {c.batch_size}{per} is more than the {len(self.dataset)} training clips of "
                            f"{c.data_root} ({len(self.train_videos)} videos); use --batch-size "
                            f"{max(1, len(self.dataset) // self.rt.world_size)} or less (the paper's is 4)")
        want = c.resident if c.resident is not None else fits_on(self.rt.device, resident_bytes(self.dataset))
        self.resident = ResidentFrames(self.dataset, self.rt.device) if want else None
        self.store = self._store(DatasetSource(self.dataset, self.rt.device, with_background=self.extractor.needs_background,
                                               name=f"{c.dataset}/training"))
        if self.store.shards is not None:
            # Each chunk once, by one rank, in batches of a chunk; every rank reads them all.
            self.store.precompute(range(len(self.train_videos)), self.rt.rank, self.rt.world_size)
            if self.rt.distributed:
                torch.distributed.barrier()
        if self.resident is not None:
            # With the frames, the features too, up front and on the device, as far as the budget goes.
            self.store.fill(range(len(self.train_videos)))
        # Under DDP every global batch holds distinct videos; each rank takes its share of it.
        self.sampler = VideoBalancedSampler(self.dataset, c.batch_size * self.rt.world_size, seed=c.seed)
        sampler = RankShard(self.sampler, self.rt.rank, self.rt.world_size) if self.rt.distributed else self.sampler
        self.rank_sampler = sampler
        self.loader = None if self.resident is not None else DataLoader(
            self.dataset,
            batch_size=c.batch_size,
            sampler=sampler,
            num_workers=c.num_workers,
            pin_memory=self.rt.device.type == "cuda",
            persistent_workers=c.num_workers > 0,
            prefetch_factor=4 if c.num_workers > 0 else None,
            drop_last=True,
        )

    def batches(self):
        """The endless batches of this rank: made on the device from the resident frames, or by the loader."""
        if self.resident is not None:
            return self.resident.batches(self.rank_sampler, self.cfg.batch_size)
        return iter(self.loader)

    def _release_loader(self) -> None:
        """Stop the loader's worker processes now, not when the trainer is collected: forked
        while the run folder was locked, they hold its lock's descriptor."""
        workers = getattr(self.loader, "_iterator", None)
        if workers is not None and hasattr(workers, "_shutdown_workers"):
            workers._shutdown_workers()
        self.loader = None

    def _store(self, source: FrameSource) -> FeatureStore:
        # No augmentation: a frame's labels, a pair's flow (and, for the destroyer, a clip's
        # frozen prediction) never change, so each is computed once (docs/design.md), from frames the
        # store reads itself, in canonical chunks (the same bits whatever the batch).
        c, ex = self.cfg, self.extractor
        if c.feature_store == "disk" and ex.weights_id is not None:
            shards = feature_shards(cache_folder("features"), ex.weights_id, c.size, ex.chunk, background="video-median")
            budget = FEATURE_BUDGET if self.resident is not None else DISK_MEMORY_BUDGET
            return FeatureStore(ex, source, self.rt.device, budget, shards)
        return FeatureStore(ex, source, self.rt.device, FEATURE_BUDGET if c.feature_store != "off" else 0)

    @property
    def scoring_feature_dir(self) -> Path | None:
        """Where calibration keeps the training videos' scoring features (the destroyer stage and
        `mama eval` read them back), with the disk store."""
        return cache_folder("features") if self.cfg.feature_store == "disk" else None

    def _batch_inputs(self, batch):
        clip = batch["clip"].to(self.rt.device, non_blocking=True)
        return self.store.clip_inputs(clip, batch["video"], batch["target"])

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, payload: dict) -> None:
        raise NotImplementedError

    def _payload(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "stage": self.stage,
            "config": self.cfg.to_dict(),
            "model": self.model_meta,
            "step": self.step,
            "best": self.best,
            "world_size": self.rt.world_size,
            "rng": rng_state(),
            **self.state(),
        }

    def save(self, name: str, extra: dict | None = None) -> Path | None:
        if not self.rt.is_main:
            return None
        payload = self._payload()
        if extra:
            payload.update(extra)
        return save_checkpoint(self.run_dir / f"{name}.pt", payload)

    def _resume_payload(self) -> dict:
        """The checkpoint to resume from, checked: this stage's, the same settings, more steps to go."""
        c = self.cfg
        path = self._resume_path
        if c.resume == "latest" and not path.is_file():
            raise MamaError(f"--resume latest: {path} does not exist (no run to continue in {self.run_dir}); "
                            "drop --resume to start one, or give the --out of the run to continue")
        payload = read_file(path, "run")
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("stage") != self.stage:
            raise MamaError(
                f"cannot resume the {self.stage} stage from {path}: it is a "
                f"{payload.get('stage', 'reference-code')} checkpoint; give a {self.stage} run's latest.pt"
            )
        saved = payload.get("config") or {}
        for name in RESUME_MUST_MATCH:
            if name in saved and saved[name] != getattr(c, name):
                flag = "--" + name.replace("_", "-")
                raise MamaError(f"{flag} {getattr(c, name)} differs from the run being resumed ({path} was trained with "
                                f"{flag} {saved[name]}); resume with the same {flag}, or train into another --out")
        if payload.get("world_size", 1) != self.rt.world_size:
            raise MamaError(f"{path} was trained by {payload.get('world_size', 1)} processes, this run has "
                            f"{self.rt.world_size}; resume with the same torchrun --nproc_per_node")
        step = payload.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0 or not isinstance(payload.get("rng"), dict):
            raise MamaError(f"{path}: its step ({step!r}) or random state is missing or damaged; resume from another "
                            "checkpoint of the run (best.pt), or drop --resume")
        if c.iters <= step:
            raise MamaError(f"--iters {c.iters} is not above the step {step} of {path}; give --iters above {step} "
                            "to train on")
        return payload

    @property
    def _resume_path(self) -> Path:
        return Path(self.cfg.resume) if self.cfg.resume != "latest" else self.run_dir / "latest.pt"

    def _resume(self, payload: dict) -> None:
        try:
            self.load_state(payload)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:  # an entry missing or of another shape
            detail = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:160]
            raise MamaError(f"{self._resume_path}: cannot restore the {self.stage} run from it ({detail}); resume from "
                            "another checkpoint of the run (best.pt), or drop --resume") from None
        self.step = self._last_saved = int(payload["step"])
        self.best = payload.get("best")
        set_rng_state(payload["rng"])
        # The clip order is a pure function of (seed, clips consumed): skip what was used.
        self.sampler.resume_at(self.step * self.cfg.batch_size * self.rt.world_size)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Train; every input is checked before anything is written into the run folder, which
        this run holds locked while it writes."""
        c = self.cfg
        check_output_folder(self.run_dir)
        self._data()
        if c.resume:  # restored before the run folder is touched: a damaged checkpoint changes nothing there
            self._resume(self._resume_payload())
        fresh = not self.run_dir.exists()
        with output_folder(self.run_dir, enabled=self.rt.is_main):
            try:
                return self._run()
            except MamaError:
                # Bad input found while training (a frame read for the first batch, say): a run
                # folder this run made and that holds no checkpoint yet is removed, not left half-made.
                if self.log is not None:
                    self.log.close()
                if fresh and self.rt.is_main and not any(self.run_dir.glob("*.pt")):
                    shutil.rmtree(self.run_dir, ignore_errors=True)
                raise
            finally:
                self._release_loader()

    def _run(self) -> Path:
        c = self.cfg
        self.log = RunLog(self.run_dir, enabled=self.rt.is_main)
        if self.rt.is_main:
            c.save(self.run_dir / f"config_{self.stage}.json")
            if c.select_on_test:
                print("NOTE: --select-on-test: validation and the 'best' checkpoint use TEST labels.")
        self.wrap_ddp()
        it = self.batches()
        stopped = None
        pending: list[tuple[int, dict]] = []  # steps whose figures are still on the device
        t0, steps0 = time.time(), self.step
        columns = (TextColumn(f"[bold]{self.stage}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:.2f} it/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                   TextColumn("{task.fields[info]}"))
        with StopRequest() as stop, Progress(*columns, disable=not self.rt.is_main, transient=False) as bar:
            task = bar.add_task(self.stage, total=c.iters, completed=self.step, rate=0.0, info="")
            while self.step < c.iters:
                pending.append((self.step + 1, self.train_step(next(it))))
                self.step += 1
                rate = (self.step - steps0) / max(time.time() - t0, 1e-9)
                validate = self.step % c.val_interval == 0 or self.step == c.iters
                save = self.step % c.save_interval == 0
                logged = self.step % READBACK_EVERY == 0 or self.step in (1, c.iters)
                if logged or validate or save or stop.requested:
                    scalars = self._read_back(pending)
                    pending = []
                    bar.update(task, completed=self.step, rate=rate,
                               info=" ".join(f"{k.split('/')[-1]}={v:.4f}" for k, v in list(scalars.items())[:3]))
                    if logged:
                        self.log.scalars(self.step, {**scalars, "speed/it_per_s": rate})
                else:
                    bar.update(task, completed=self.step, rate=rate)
                if validate:
                    self._validate()
                if save:
                    self._save_latest()
                if stop.requested:
                    stopped = stop.requested
                    break
        self._save_latest()
        if stopped:
            if self.rt.is_main:
                print(f"{stopped}: saved {self.run_dir / 'latest.pt'} at step {self.step}; resume with --resume latest")
        else:
            self.finish()
        self.log.close()
        teardown_runtime(self.rt)
        return self.run_dir

    def _read_back(self, pending: list[tuple[int, dict]]) -> dict[str, float]:
        """The figures of the steps in `pending` in one transfer; the last step's, as floats. A
        non-finite loss stops the run, naming the first step that had one."""
        flat = as_floats({(i, k): v for i, (_, scalars) in enumerate(pending) for k, v in scalars.items()})
        steps = [(step, {k: flat[i, k] for k in scalars}) for i, (step, scalars) in enumerate(pending)]
        for step, values in steps:
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            if bad:
                self.log.close()
                kept = (f"{self.run_dir / 'latest.pt'} (step {self._last_saved}) is the last good checkpoint"
                        if (self.run_dir / "latest.pt").is_file() else "no checkpoint was saved yet")
                raise MamaError(f"{', '.join(bad)} became {values[bad[0]]} at step {step}; the run stopped and {kept}; "
                                "lower the learning rate or check the input data")
        return steps[-1][1]

    def _save_latest(self) -> None:
        self.save("latest")
        if self.cfg.keep_checkpoints and self.rt.is_main:
            shutil.copyfile(self.run_dir / "latest.pt", self.run_dir / f"step_{self.step:06d}.pt")
        self._last_saved = self.step

    def _validate(self) -> None:
        if not self.rt.is_main:
            return
        with torch.no_grad():
            name, values = self.validate()
        self.set_train_mode()
        self.log.scalars(self.step, {f"val/{k}": v for k, v in values.items()})
        if self.best is None or values[name] > self.best:  # every selection figure is an AUC
            self.best = values[name]
            self.save("best")

    @property
    def bn_frozen(self) -> bool:
        """Whether the trained network's BatchNorm is in eval mode for the next step: with
        `eval-after-validation` (paper preset) from the first validation (step val_interval) on."""
        return self.cfg.batchnorm == "eval-after-validation" and self.step >= self.cfg.val_interval

    def set_train_mode(self) -> None:
        """Put the trained networks in the mode the next step runs them in."""
        for net in self.trained_networks():
            net.train(not self.bn_frozen)

    @functools.cached_property
    def validator(self) -> PseudoAnomalyValidator:
        """The fixed pseudo-anomaly set, built (features included) at the first validation."""
        c = self.cfg
        return PseudoAnomalyValidator(self.extractor, self.val_videos, c.size, c.val_clips, PSEUDO_KINDS, c.seed,
                                      self.rt.device)

    def validate(self) -> tuple[str, dict[str, float]]:
        """(name of the selection figure, every validation figure)."""
        c = self.cfg
        scorer = self.scorer()
        if c.select_on_test:
            auc = test_set_auc(scorer, c.dataset, c.data_root, c.size, with_destroyer=self.stage == "destroyer")
            return "test_auc_SELECTED_ON_TEST", {"test_auc_SELECTED_ON_TEST": auc}
        values = {f"pseudo_{k}": v for k, v in self.validator.score(scorer, self.clean_weights).items()}
        return "pseudo_auc", values

    @property
    def clean_weights(self) -> FusionWeights:
        return clean_weights(self.cfg.motion, self.cfg.labels)

    def finish(self) -> None:
        """Check each stream's health (the model card), calibrate the card's fusion on normal
        videos, write the final checkpoint."""
        if not self.rt.is_main:
            return
        scorer = self.scorer()
        why = f"final.pt is the last step ({self.step})"
        if self.best is not None:
            figure = "test AUC (--select-on-test)" if self.cfg.select_on_test else "pseudo-anomaly AUC"
            why += f"; best.pt is the best {figure} of the validations ({self.best:.3f})"
        with torch.no_grad():
            card = model_card(self.validator, scorer, self.clean_weights, "fixed in advance for the clean protocol",
                              {"step": self.step, "why": why})
        self.set_train_mode()
        for line in card_lines(card):
            print(line)
        self.log.scalars(self.step, {f"card/auc_{s['name']}": s["auc"] for s in card["streams"]})
        self.log.text(self.step, "card/flags", card["flags"])
        # Held-out videos first (unseen normal video sets an honest threshold), then training ones.
        videos = list(dict.fromkeys(self.val_videos + self.train_videos))[: max(self.cfg.calibrate_videos, 1)]
        calib = calibrate(scorer, videos, size=self.cfg.size, weights=FusionWeights.parse(card["fusion"]["weights"]),
                          max_frames=self.cfg.calibrate_frames)
        self.save("final", {"calibration": calib, "card": card})
        # best/latest get the calibration too, so any of them can be used with `mama score`.
        for name in ("best", "latest"):
            p = self.run_dir / f"{name}.pt"
            if p.exists():
                payload = read_file(p, "run")
                payload["calibration"] = calib
                save_checkpoint(p, payload)

    # ------------------------------------------------------------------ per stage
    def build_parts(self):
        raise NotImplementedError

    def wrap_ddp(self) -> None:
        raise NotImplementedError

    def train_step(self, batch) -> dict[str, float]:
        raise NotImplementedError

    def trained_networks(self) -> list[nn.Module]:
        raise NotImplementedError

    def scorer(self) -> Scorer:
        raise NotImplementedError

    @functools.cached_property
    def scoring_extractor(self) -> FeatureExtractor:
        """The frozen feature networks as validation scores with them, prepared once per run
        (inference copies take seconds to make for DeepLabv3 + FlowNet2-SD)."""
        dev = self.rt.device
        return self.extractor.inference_copy(dev) if copies_pay(dev) else self.extractor

    # Where --compile applies (CUDA: the CPU's compile time is not won back in a run) and with
    # which backend; tests compile on the CPU through these.
    compile_devices = ("cuda",)
    compile_backend = "inductor"

    @property
    def compiled(self) -> bool:
        return bool(self.cfg.compile) and self.rt.device.type in self.compile_devices

    def _maybe_compile(self, m: nn.Module) -> nn.Module:
        # CUDA graphs replay the fixed-shape step without the host; not under DDP, whose
        # gradient hooks run on the host.
        if not self.compiled:
            return m
        return compile_model(m, self.rt.device, graphs=not self.rt.distributed, backend=self.compile_backend)

    def _step_begins(self) -> None:
        """Tell CUDA graphs a new step begins (the last step's graph outputs may be overwritten)."""
        if self.compiled and self.rt.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()

    def _ddp(self, m: nn.Module) -> nn.Module:
        if not self.rt.distributed:
            return m
        ids = [self.rt.device.index] if self.rt.device.type == "cuda" else None
        return DDP(m, device_ids=ids)


class GeneratorTrainer(Trainer):
    stage = "generator"

    def __init__(self, cfg: TrainConfig, parts: GeneratorParts | None = None, source: FrameSource | None = None):
        super().__init__(cfg, parts, source)
        c, dev = self.cfg, self.rt.device
        self.net_g = self.parts.net_g.to(dev)
        self.net_d = self.parts.net_d.to(dev)
        fused = dev.type == "cuda"
        self.opt_g = adamw(self.net_g, c.lr_g, c.weight_decay, fused)
        self.opt_d = adamw(self.net_d, c.lr_d, c.weight_decay, fused)

    def build_parts(self) -> GeneratorParts:
        return GeneratorParts.from_config(self.cfg, self.rt.device)

    def wrap_ddp(self) -> None:
        self.g = self._ddp(self._maybe_compile(self.net_g))
        self.d = self._ddp(self._maybe_compile(self.net_d))

    def state(self) -> dict:
        return {"net_g": self.net_g.state_dict(), "net_d": self.net_d.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state(self, p: dict) -> None:
        self.net_g.load_state_dict(p["net_g"])
        self.net_d.load_state_dict(p["net_d"])
        self.opt_g.load_state_dict(p["opt_g"])
        self.opt_d.load_state_dict(p["opt_d"])

    def train_step(self, batch) -> dict:
        """One step; its figures stay on the device (0-dim tensors; the learning rates as floats)."""
        c = self.cfg
        x, flows, labels, target = self._batch_inputs(batch)
        self.set_train_mode()
        self._step_begins()
        amp = bool(c.amp) and self.rt.device.type == "cuda"
        # The reference order: every loss from the current G and D, then G's step, then D's.
        with torch.autocast(self.rt.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self.g(x, flows, labels)
            pred = out.pred.float()
            inte = losses.intensity_loss(pred, target)
            grad = losses.gradient_loss(pred, target)
            adv = losses.generator_adversarial_loss(self.d(pred).float())
            sim_m, sim_l = bottleneck_sims(out)
            sim = sim_m.mean() + (sim_l.mean() if sim_l is not None else 0.0)
            g_loss = inte + grad + c.adv_weight * adv + c.sim_weight * sim
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        with torch.autocast(self.rt.device.type, dtype=torch.bfloat16, enabled=amp):
            # Real and fake through D in one forward; the fake is the prediction made above.
            d_out = self.d(torch.cat([target, pred.detach()])).float()
            d_loss = losses.discriminator_loss(*d_out.chunk(2))
        self.opt_d.zero_grad(set_to_none=True)  # drops what G's backward left in D
        d_loss.backward()
        self.opt_d.step()
        with torch.no_grad():
            psnr = losses.psnr(pred, target).mean()
        return {
            "loss/g_total": g_loss.detach(), "loss/intensity": inte.detach(), "loss/gradient": grad.detach(),
            "loss/adversarial": adv.detach(), "loss/sim_motion": sim_m.detach().mean(),
            "loss/sim_label": sim_l.detach().mean() if sim_l is not None else 0.0,
            "loss/d": d_loss.detach(), "train/psnr": psnr,
            "lr/g": self.opt_g.param_groups[0]["lr"], "lr/d": self.opt_d.param_groups[0]["lr"],
        }

    def trained_networks(self) -> list[nn.Module]:
        return [self.net_g, self.net_d]  # the discriminator has no BatchNorm: its mode changes nothing

    def scorer(self) -> Scorer:
        return Scorer(_unwrap(self.net_g).eval(), self.scoring_extractor, None, self.rt.device, amp=False,
                      feature_dir=self.scoring_feature_dir)


class DestroyerTrainer(Trainer):
    stage = "destroyer"

    def __init__(self, cfg: TrainConfig, parts: DestroyerParts | None = None, source: FrameSource | None = None):
        self._generator = None
        if parts is None:
            # The generator's settings (providers, preset, frame size, width) unless given alike.
            self._generator = generator_checkpoint(cfg)
            cfg = inherit_generator(cfg, self._generator)
        super().__init__(cfg, parts, source)
        c, dev = self.cfg, self.rt.device
        self.net_g = self.parts.net_g.to(dev).eval().requires_grad_(False)
        self.net_a = self.parts.net_a.to(dev)
        self.opt_a = adamw(self.net_a, c.lr_a, c.weight_decay, fused=dev.type == "cuda")
        # Mask and rate are drawn on the CPU; the dropout draws on the frames' device.
        self.noise_gen = torch.Generator().manual_seed(c.seed)
        self.noise_gen_dev = torch.Generator(device=dev).manual_seed(c.seed + 1)

    def build_parts(self) -> DestroyerParts:
        return DestroyerParts.from_config(self.cfg, self.rt.device, self._generator)

    def wrap_ddp(self) -> None:
        # The frozen generator runs once per clip (the store keeps its predictions): compiling it
        # would not pay, and CUDA graphs would hand the store outputs the next replay overwrites.
        self.g = self.net_g
        self.a = self._ddp(self._maybe_compile(self.net_a))

    def state(self) -> dict:
        return {"net_g": self.net_g.state_dict(), "net_a": self.net_a.state_dict(),
                "opt_a": self.opt_a.state_dict(), "noise_rng": self.noise_gen.get_state(),
                "noise_rng_device": self.noise_gen_dev.get_state()}

    def load_state(self, p: dict) -> None:
        self.net_a.load_state_dict(p["net_a"])
        self.opt_a.load_state_dict(p["opt_a"])
        self.noise_gen.set_state(p["noise_rng"])
        self.noise_gen_dev.set_state(p["noise_rng_device"])

    def damage(self, pred: torch.Tensor) -> torch.Tensor:
        """The paper's damage: channel dropout on the patches selected, one patch set for the
        batch; each patch selected with probability rate, rate and dropout p each drawn in
        [0.05, 0.5] and rounded to 2 decimals (so some batches are not damaged at all)."""
        c = self.cfg
        grid = (pred.shape[-2] // c.patch, pred.shape[-1] // c.patch)
        mask = ops.random_patch_mask(grid, DAMAGE_RANGE, generator=self.noise_gen)
        p = ops.random_rate(*DAMAGE_RANGE, generator=self.noise_gen)
        return ops.patch_noise(pred, mask.to(pred.device), kind="dropout", p=p, generator=self.noise_gen_dev)

    def _predictions(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(frozen generator's prediction, target frame) of each clip of the batch."""
        clip = batch["clip"].to(self.rt.device, non_blocking=True)
        return self.store.predictions(clip, batch["video"], batch["target"], lambda inputs: self.g(*inputs[:3]).pred.float())

    def train_step(self, batch) -> dict:
        """One step; its loss stays on the device (a 0-dim tensor; the learning rate as a float)."""
        c = self.cfg
        pred, target = self._predictions(batch)
        self.set_train_mode()
        self._step_begins()
        damaged = self.damage(pred)
        with torch.autocast(self.rt.device.type, dtype=torch.bfloat16, enabled=bool(c.amp) and self.rt.device.type == "cuda"):
            out = self.a(damaged).float()
        # The reference's background is a black image (its JPEG is near-black, about -0.977).
        bg = torch.full_like(pred, -1.0)
        # A = the clean prediction, N = the damaged one (the destroyer's input): undamaged patches
        # are pulled back to the clean prediction, damaged ones (low SSIM to the target) to black.
        loss = ops.patch_destroy_loss(pred, damaged, target, out, bg, c.patch, c.ld)
        self.opt_a.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_a.step()
        return {"loss/destroy": loss.detach(), "lr/a": self.opt_a.param_groups[0]["lr"]}

    def trained_networks(self) -> list[nn.Module]:
        return [self.net_a]

    def scorer(self) -> Scorer:
        return Scorer(self.scoring_generator, self.scoring_extractor, _unwrap(self.net_a).eval(), self.rt.device,
                      amp=False, feature_dir=self.scoring_feature_dir)

    @functools.cached_property
    def scoring_generator(self) -> nn.Module:
        """The frozen generator as validation scores with it, prepared once per run."""
        dev = self.rt.device
        return prepare_for_inference(self.net_g, dev) if copies_pay(dev) else self.net_g


def train(cfg: TrainConfig) -> Path:
    trainer = {"generator": GeneratorTrainer, "destroyer": DestroyerTrainer}.get(cfg.stage)
    if trainer is None:
        raise MamaError(f"unknown --stage {cfg.stage!r}; use generator or destroyer")
    return trainer(cfg).run()
