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

A stage is built from its parts (mama.train.parts), made from the config unless they are
handed in. Its homes: the run's data (run_data), its state on disk and the resume checks
(run_state), the figures read back and shown (progress), the end-of-run card and calibration
(finish); here, the loop and what each stage does in a step.
"""
from __future__ import annotations

import functools
import math
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mama import ops
from mama.config import DAMAGE_RANGE, TrainConfig, feature_dir
from mama.errors import MamaError
from mama.evaluate.engine import Scorer
from mama.evaluate.fusion import FusionWeights, clean_weights
from mama.evaluate.validation import PSEUDO_KINDS, PseudoAnomalyValidator, test_set_auc
from mama.features.extractor import FeatureExtractor
from mama.features.store import FrameSource
from mama.io import check_output_folder, output_folder
from mama.models.checkpoint import read_file, save_checkpoint
from mama.models.inference import copies_pay, prepare_for_inference
from mama.models.scores import bottleneck_sims
from mama.runtime import Runtime, StopRequest, compile_model, setup_runtime, share_cpu, teardown_runtime
from mama.train import losses
from mama.train.finish import run_calibration, run_card
from mama.train.parts import DestroyerParts, GeneratorParts, generator_checkpoint, inherit_generator
from mama.train.progress import READBACK_EVERY, as_floats, bar_info, progress_bar
from mama.train.run_data import RunData, feature_store, run_data
from mama.train.run_state import CHECKPOINT_FORMAT, resume_path, resume_payload
from mama.train.session import RunLog, rng_state, seed_everything, set_rng_state

__all__ = ["DestroyerParts", "DestroyerTrainer", "GeneratorParts", "GeneratorTrainer", "READBACK_EVERY", "Trainer",
           "adamw", "as_floats", "train"]


def adamw(net: nn.Module, lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW as the reference configures it; `fused` (on CUDA): one kernel for every parameter."""
    if fused:
        return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)


def _unwrap(m: nn.Module) -> nn.Module:
    m = m.module if isinstance(m, DDP) else m
    return getattr(m, "_orig_mod", m)


class Trainer:
    """Shared machinery of both stages; subclasses define their parts, one step and scoring."""

    stage = ""  # the name a checkpoint, the config file and the progress bar give the stage
    scores_with_destroyer = False  # whether validation scores the destroyer's stream too

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
        self.data: RunData | None = None  # the dataset's videos, clips, store and order (made by run())
        # The features of `source` (benchmarks hand one in), else the dataset's, made by run().
        self.store = None if source is None else feature_store(self.cfg, self.extractor, source, self.rt.device, False)
        self.run_dir = Path(self.cfg.out)
        self.step = 0
        self.best: float | None = None
        self._last_saved = 0  # step of the newest latest.pt (named in the NaN message)
        self.log: RunLog | None = None  # opened by run(), once every input has been checked

    # ------------------------------------------------------------------ data
    def _data(self) -> None:
        self.data = run_data(self.cfg, self.rt, self.extractor)
        self.store = self.data.store

    @property
    def train_videos(self) -> list:
        return self.data.train_videos

    @property
    def val_videos(self) -> list:
        return self.data.val_videos

    def batches(self):
        """The endless batches of this rank."""
        return self.data.batches(self.cfg.batch_size)

    @property
    def scoring_feature_dir(self) -> Path | None:
        """Where calibration keeps the training videos' scoring features (the destroyer stage and
        `mama eval` read them back), with the disk store."""
        return feature_dir(self.cfg.feature_store)

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
        return save_checkpoint(self.run_dir / f"{name}.pt", {**self._payload(), **(extra or {})})

    def _save_latest(self, payload: dict | None = None) -> None:
        """latest.pt (and with keep_checkpoints its copy step_N.pt): this step's state, or `payload`."""
        if self.rt.is_main:
            save_checkpoint(self.run_dir / "latest.pt", payload if payload is not None else self._payload())
            if self.cfg.keep_checkpoints:
                shutil.copyfile(self.run_dir / "latest.pt", self.run_dir / f"step_{self.step:06d}.pt")
        self._last_saved = self.step

    def _resume(self, payload: dict) -> None:
        try:
            self.load_state(payload)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:  # an entry missing or of another shape
            detail = f"no {exc.args[0]!r}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:160]
            raise MamaError(f"{resume_path(self.cfg, self.run_dir)}: cannot restore the {self.stage} run from it "
                            f"({detail}); resume from another checkpoint of the run (best.pt), or drop --resume") from None
        self.step = self._last_saved = int(payload["step"])
        self.best = payload.get("best")
        set_rng_state(payload["rng"])
        # The clip order is a pure function of (seed, clips consumed): skip what was used.
        self.data.sampler.resume_at(self.step * self.cfg.batch_size * self.rt.world_size)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Path:
        """Train; every input is checked before anything is written into the run folder, which
        this run holds locked while it writes."""
        c = self.cfg
        check_output_folder(self.run_dir)
        self._data()
        if c.resume:  # restored before the run folder is touched: a damaged checkpoint changes nothing there
            self._resume(resume_payload(c, self.run_dir, self.stage, self.rt.world_size))
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
                if self.data is not None:
                    self.data.release()

    def _run(self) -> Path:
        """The run in its folder: the steps, then the last checkpoints (a stopped run: latest.pt to resume from)."""
        self.log = RunLog(self.run_dir, enabled=self.rt.is_main)
        if self.rt.is_main:
            self.cfg.save(self.run_dir / f"config_{self.stage}.json")
            if self.cfg.select_on_test:
                print("NOTE: --select-on-test: validation and the 'best' checkpoint use TEST labels.")
        self.wrap_networks()
        stopped = self._steps()
        if stopped:
            self._save_latest()
            if self.rt.is_main:
                print(f"{stopped}: saved {self.run_dir / 'latest.pt'} at step {self.step}; resume with --resume latest")
        else:
            self.finish()
        self.log.close()
        teardown_runtime(self.rt)
        return self.run_dir

    def _steps(self) -> str | None:
        """Train up to cfg.iters, validating and saving on the way; the stop's name if one came."""
        c = self.cfg
        it = self.batches()
        pending: list[tuple[int, dict]] = []  # steps whose figures are still on the device
        t0, steps0 = time.time(), self.step
        with StopRequest() as stop, progress_bar(self.stage, self.rt.is_main) as bar:
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
                    bar.update(task, completed=self.step, rate=rate, info=bar_info(scalars))
                    if logged:
                        self.log.scalars(self.step, {**scalars, "speed/it_per_s": rate})
                else:
                    bar.update(task, completed=self.step, rate=rate)
                if validate:
                    self._validate()
                if save:
                    self._save_latest()
                if stop.requested:
                    return stop.requested
        return None

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
            auc = test_set_auc(scorer, c.dataset, c.data_root, c.size, with_destroyer=self.scores_with_destroyer)
            return "test_auc_SELECTED_ON_TEST", {"test_auc_SELECTED_ON_TEST": auc}
        values = {f"pseudo_{k}": v for k, v in self.validator.score(scorer, self.clean_weights).items()}
        return "pseudo_auc", values

    @property
    def clean_weights(self) -> FusionWeights:
        return clean_weights(self.cfg.motion, self.cfg.labels)

    def finish(self) -> None:
        """The last step's checkpoints: the model card (each stream's health) and the card's
        fusion calibrated on normal videos, written with latest.pt and final.pt; best.pt, saved
        at an earlier step whose state is no longer in memory, gets the calibration added (so
        any of the three can be used with `mama score`)."""
        latest = self._payload()  # this step's state, as a stopped run would have saved it
        if not self.rt.is_main:
            self._save_latest(latest)
            return
        try:
            scorer = self.scorer()
            card = run_card(self.cfg, self.validator, scorer, self.clean_weights, self.step, self.best, self.log)
            self.set_train_mode()
            calib = run_calibration(self.cfg, scorer, card, self.val_videos, self.train_videos)
        except BaseException:
            self._save_latest(latest)  # the steps since the last save are kept, calibrated or not
            raise
        self._save_latest({**latest, "calibration": calib})
        self.save("final", {"calibration": calib, "card": card})
        best = self.run_dir / "best.pt"
        if best.exists():
            save_checkpoint(best, {**read_file(best, "run"), "calibration": calib})

    # ------------------------------------------------------------------ per stage
    def build_parts(self):
        raise NotImplementedError

    def wrap_networks(self) -> None:
        """The networks as a step runs them (compiled where asked, under DDP when distributed):
        self.g and self.d (generator stage) or self.a (destroyer stage)."""
        raise NotImplementedError

    def train_step(self, batch) -> dict[str, torch.Tensor | float]:
        """One step; its figures stay on the device (0-dim tensors; the learning rates as floats)."""
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

    def wrap_networks(self) -> None:
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

    def train_step(self, batch) -> dict[str, torch.Tensor | float]:
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
    scores_with_destroyer = True

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

    def wrap_networks(self) -> None:
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

    def train_step(self, batch) -> dict[str, torch.Tensor | float]:
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
