"""The cache folder: what mama keeps because it can be recomputed, what is in it, and clearing
it without pulling an entry from under a process that uses it.

The folder is `$MAMA_CACHE`, else ~/.cache/mama (mama.io.cache_dir):

    frames/<video>-<digest>-<H>x<W>.npy        a video file decoded once (prepared frames)
    features/<digest>/identity.json             what the features below depend on (providers, weights, size)
    features/<digest>/<video key>/chunkNNNNNN.safetensors
                                                one video's coarse labels and flow, chunk by chunk
    weights/                                    pretrained files (`mama weights`): listed, never cleared here

An entry is one prepared video, or one video's features in one store. Beside it lies its lock
file, `.<name>.lock`. A process that reads or writes an entry holds a shared flock on that file
for as long as it uses it (`hold`), and stamps the file's time when it starts: that time is the
entry's last use. Clearing takes the lock exclusively without waiting; an entry it cannot lock
is in use and is kept. The system drops a process's locks when it ends, even by kill -9.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from mama.errors import MamaError
from mama.io import cache_dir

KINDS = ("frames", "features")
LOCK_SUFFIX = ".lock"
# atomic_path's temporaries: .<name>.<random>.tmp[suffix]
_TEMP = re.compile(r"^\.(?P<name>.+)\.[^.]+\.tmp(\.[^.]*)?$")
# the digests in a video's name in the cache: of its source (12 hex), of its background (-bg, 10 hex)
_DIGEST = re.compile(r"-(bg[0-9a-f]{10}|[0-9a-f]{12})(?=-|$)")
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def lock_path(entry: Path) -> Path:
    """The lock file of a cache entry (a file or a folder): .<name>.lock beside it."""
    return entry.parent / f".{entry.name}{LOCK_SUFFIX}"


class Hold:
    """A shared flock on a cache entry's lock file, kept until `close()` (or until the object is
    collected, or the process ends). Usable as a context manager."""

    def __init__(self, entry: Path):
        self.entry = Path(entry)
        lock = lock_path(self.entry)
        while True:
            lock.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # a clear removed the folder between the two calls
                continue
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a clear holds it
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # a clear removed this lock file while we waited: lock the new one
        os.utime(fd)  # the entry's last use
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "Hold":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def hold(entry: str | os.PathLike) -> Hold:
    """Hold a cache entry in use (see the module's docstring)."""
    return Hold(Path(entry))


def _claim(entry: Path) -> int | None:
    """An exclusive lock on the entry's lock file (its descriptor), or None when a process holds
    it. The lock file is made if missing, so a process that starts using the entry meanwhile
    waits for the clear to finish (and then finds the entry gone, and makes it again)."""
    lock = lock_path(entry)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the entry's folder is gone
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@dataclass
class Entry:
    """One thing in the cache."""

    kind: str  # "frames" | "features"
    path: Path  # the file (frames) or folder (features)
    video: str  # the video's name (features: <dataset>/<split>/<video> where the store names it)
    detail: str  # frames: their size; features: the providers, frame size and use
    bytes: int
    last_use: float  # seconds since the epoch
    in_use: bool  # a process holds it now
    complete: bool = True  # False: only a killed writer's temporaries are left
    extra: tuple[Path, ...] = ()  # temporaries of the entry, removed with it


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _last_use(entry: Path, files: list[Path]) -> float:
    times = [p.stat().st_mtime for p in files]
    lock = lock_path(entry)
    if lock.exists():
        times.append(lock.stat().st_mtime)
    return max(times, default=0.0)


def _in_use(entry: Path) -> bool:
    """Whether a process holds the entry now (an entry without a lock file was never held)."""
    try:
        fd = os.open(lock_path(entry), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _frames_entries(folder: Path) -> list[Entry]:
    groups: dict[str, list[Path]] = {}
    for p in folder.iterdir() if folder.is_dir() else ():
        if not p.is_file() or p.name.endswith(LOCK_SUFFIX):
            continue
        temp = _TEMP.match(p.name)
        groups.setdefault(temp["name"] if temp else p.name, []).append(p)
    out = []
    for name, files in sorted(groups.items()):
        entry = folder / name
        stem, _, size = Path(name).stem.rpartition("-")
        out.append(Entry("frames", entry, _DIGEST.sub("", stem) or name, size, sum(f.stat().st_size for f in files),
                         _last_use(entry, files), _in_use(entry), entry.is_file(),
                         tuple(f for f in files if f != entry)))
    return out


def _provider_text(store: Path) -> str:
    try:
        identity = json.loads((store / "identity.json").read_text())
    except (OSError, ValueError):
        return "unknown providers"
    text = f"{identity.get('motion', '?')}+{identity.get('labels', '?')} {identity.get('size', '?')}px"
    return text + (" scoring" if identity.get("use") == "scoring" else " training")


def _features_entries(folder: Path) -> list[Entry]:
    out = []
    for store in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else ():
        provider = _provider_text(store)
        for dirpath, _, filenames in sorted(os.walk(store)):
            entry = Path(dirpath)
            files = [entry / f for f in filenames if not f.endswith(LOCK_SUFFIX)]
            if entry == store or not files:
                continue
            key = entry.relative_to(store).as_posix()
            out.append(Entry("features", entry, _DIGEST.sub("", key), provider, _size(entry), _last_use(entry, files),
                             _in_use(entry), any(f.name.startswith("chunk") for f in files)))
    return out


def entries(root: str | os.PathLike | None = None) -> list[Entry]:
    """Every entry in the cache folder (`root`, default cache_dir()), frames first."""
    root = Path(root) if root is not None else cache_dir()
    return _frames_entries(root / "frames") + _features_entries(root / "features")


def weights_bytes(folder: Path) -> int:
    """The size of a weights folder (listed beside the cache, never cleared by it)."""
    return _size(folder) if folder.is_dir() else 0


def parse_age(text: str, flag: str = "--older-than") -> float:
    """'90m', '12h', '7d', '2w' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*", text or "")
    if not match:
        raise MamaError(f"{flag} {text!r}: give a number and a unit, m (minutes), h (hours), d (days) or w (weeks), "
                        "e.g. 7d")
    return float(match[1]) * _UNITS[match[2]]


@dataclass
class Cleared:
    removed: list[Entry]
    kept: list[Entry]  # matched, but in use

    @property
    def freed(self) -> int:
        return sum(e.bytes for e in self.removed)


def _remove_parents(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents up to (not including) `stop` while they are empty."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def clear(kinds: tuple[str, ...] | list[str] = KINDS, older_than: float | None = None,
          root: str | os.PathLike | None = None, dry_run: bool = False, now: float | None = None) -> Cleared:
    """Remove the entries of `kinds` last used more than `older_than` seconds ago (None: any
    age), except those a process holds. With `dry_run` nothing is removed: `removed` lists what
    would be."""
    root = Path(root) if root is not None else cache_dir()
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise MamaError(f"--kind {unknown[0]}: no such kind of cache entry; use {' or '.join(KINDS)}")
    now = time.time() if now is None else now
    removed, kept = [], []
    for entry in entries(root):
        if entry.kind not in kinds or (older_than is not None and now - entry.last_use < older_than):
            continue
        if dry_run:
            (kept if entry.in_use else removed).append(entry)
            continue
        fd = _claim(entry.path)
        if fd is None:
            kept.append(entry)
            continue
        try:
            for path in (entry.path, *entry.extra):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                elif path.exists():
                    path.unlink()
            lock_path(entry.path).unlink(missing_ok=True)
        finally:
            os.close(fd)
        removed.append(entry)
        base = root / entry.kind
        if entry.kind == "features":
            store = base / entry.path.relative_to(base).parts[0]
            _remove_parents(entry.path.parent, store)
            _drop_empty_store(store)
    return Cleared(removed, kept)


def _drop_empty_store(store: Path) -> None:
    """A feature store folder left with nothing but its identity.json goes too (a process that
    uses it again writes identity.json back)."""
    try:
        names = os.listdir(store)
    except FileNotFoundError:
        return
    if names == ["identity.json"]:
        (store / "identity.json").unlink(missing_ok=True)
        _remove_parents(store, store.parent)
