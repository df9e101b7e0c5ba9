"""Where a process runs: the device, the torchrun process group (one process per GPU, or per
CPU with gloo; training and evaluation both run under torchrun), and clean stops on
SIGINT/SIGTERM (StopRequest: a long loop finishes what it holds, then stops)."""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mama.errors import MamaError


@dataclass(frozen=True)
class Runtime:
    """Where this process runs. Under torchrun: one process per GPU (or CPU, gloo)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto") -> torch.device:
    """`auto` (CUDA when visible, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise MamaError(f"--device {name}: unknown device; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MamaError(f"--device {name}: no CUDA device is visible here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MamaError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices are visible; use cuda:0 .. "
                        f"cuda:{torch.cuda.device_count() - 1}")
    return device


def setup_runtime(device: str = "auto") -> Runtime:
    """Single process, or the torchrun process group (RANK / WORLD_SIZE / LOCAL_RANK set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(pick_device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Runtime(dev, rank, world, local)


def teardown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def share_cpu(rt: Runtime, num_workers: int) -> None:
    """On CPU, leave cores to the loader workers and the other ranks: OpenMP threads that
    outnumber free cores spin against each other (measured here: a step 15x slower)."""
    if rt.device.type != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, cores // rt.world_size - num_workers))


def compile_model(module, device: torch.device, graphs: bool = True, backend: str = "inductor"):
    """torch.compile for a fixed-shape network; on CUDA with `graphs`, mode "reduce-overhead"
    (CUDA graphs: a step or batch replays without launching each kernel from the host; a new
    shape records a new graph). The caller marks each step's start
    (torch.compiler.cudagraph_mark_step_begin) and copies outputs it keeps past the next call."""
    mode = "reduce-overhead" if graphs and torch.device(device).type == "cuda" and backend == "inductor" else None
    return torch.compile(module, backend=backend, mode=mode)


class Interrupted(KeyboardInterrupt):
    """A stop by signal that cannot wait (StopRequest's second signal); `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT, *args):
        super().__init__(*args)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: SIGINT 130, SIGTERM 143


def exit_code_of(exc: BaseException | None) -> int:
    """The exit status of a process stopped by `exc` (an Interrupted or KeyboardInterrupt, or
    click's Abort made from one): 128 + the signal number; 130 (SIGINT) when unknown."""
    while exc is not None and not isinstance(exc, KeyboardInterrupt):
        exc = exc.__cause__ or exc.__context__
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


class StopRequest:
    """SIGINT/SIGTERM set a flag that a loop checks between units of work (a training step, a
    frame); a second signal raises Interrupted (a KeyboardInterrupt) at once, unless
    `force_on_second` is False (a loop whose units are short: every signal only asks it to stop,
    so what it has done is always written); any later one is ignored while the stopped command
    writes out what it holds. `exit_code`: 128 + the first signal's number (SIGINT 130,
    SIGTERM 143), for a command that ends because of it."""

    def __init__(self, force_on_second: bool = True):
        self.requested: str | None = None  # the first signal's name
        self.signum: int | None = None
        self.raised = False  # the second signal raised Interrupted
        self.force_on_second = force_on_second
        self._old = {}

    def __enter__(self):
        # Signals reach the main thread only: elsewhere (a server's worker) the owner calls request().
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def request(self, reason: str = "request") -> None:
        """Ask the loop to stop, as a first signal does (from any thread)."""
        if not self.requested:
            self.requested = reason

    def _handle(self, signum, frame):
        if self.raised:  # the stop is under way: let it write what it holds
            return
        if self.requested:  # a second signal: stop now
            if not self.force_on_second:
                return
            self.raised = True
            raise Interrupted(self.signum)
        self.requested, self.signum = signal.Signals(signum).name, int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
