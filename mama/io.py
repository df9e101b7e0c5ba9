"""Writing outputs safely: atomic files and folders, a full disk said in words, and output
folders that one process at a time writes into."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from mama.errors import MamaError

TEMP_MARK = ".tmp"  # in the name of every temporary atomic_path makes: .<name>.<pid>-<random>.tmp[suffix]
LOCK_NAME = ".lock"
# The writer's process id in a temporary's name: a temporary whose writer is gone is stale.
_TEMP_PID = re.compile(r"^\..*\.(\d+)-[^.]*" + re.escape(TEMP_MARK))
STALE_AFTER_S = 3600  # a temporary without a process id (older versions) is stale after this


def cache_dir() -> Path:
    """Where mama keeps what it can recompute (prepared frames, features): `$MAMA_CACHE`, else
    ~/.cache/mama."""
    env = os.environ.get("MAMA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mama"


_checked_caches: set[Path] = set()


def cache_folder(name: str) -> Path:
    """`cache_dir() / name`, created, writable and swept of the temporaries that killed writers
    left (once per process); a cache that cannot be written is one MamaError naming MAMA_CACHE."""
    folder = cache_dir() / name
    if folder in _checked_caches:
        return folder
    other = ", or run with --feature-store off" if name == "features" else " (video files are decoded once into it)"
    writable_folder(folder, "MAMA_CACHE", cache_dir(), "the cache", f"(e.g. export MAMA_CACHE=/tmp/mama-cache){other}")
    sweep_stale(folder, recursive=True)
    _checked_caches.add(folder)
    return folder


def writable_folder(folder: Path, env: str, root: Path, what: str, example: str, create: bool = True) -> Path:
    """Create `folder` (under `root`, which `$env` sets) and write a probe file in it; a file in
    the way, a read-only mount or no permission is one MamaError naming `$env` and the fix.
    `create=False`: a folder not there yet is only checked to be creatable (nothing is made)."""
    try:
        if not create and not folder.exists():
            existing = next(p for p in folder.parents if p.exists())
            if not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
                raise OSError(errno.EACCES, os.strerror(errno.EACCES))
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe.{os.getpid()}-", suffix=TEMP_MARK, dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if (blocker := _file_above(folder / "x")) is not None:
            reason = f"{blocker} is a file"
        where = f"{env}={os.environ[env]}" if os.environ.get(env) else f"{what} {root}"
        raise MamaError(f"{where}: cannot write {what} there ({reason}); point {env} at a writable folder "
                        f"{example}") from None
    return folder


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(folder: Path, recursive: bool = False) -> int:
    """Remove the temporaries under `folder` that no live process is writing: those whose writer
    (the process id in the name) is gone, and unnamed ones older than STALE_AFTER_S. Returns how
    many were removed."""
    removed = 0
    now = time.time()
    for path in (folder.rglob if recursive else folder.glob)(f".*{TEMP_MARK}*"):
        found = _TEMP_PID.match(path.name)
        try:
            if found:
                pid = int(found.group(1))
                if pid == os.getpid() or _writer_alive(pid):
                    continue
            elif now - path.lstat().st_mtime < STALE_AFTER_S:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        except OSError:
            continue
    return removed


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    # torch.save reports a failed write as RuntimeError("... file write failed"), without errno;
    # safetensors as SafetensorError("... No space left on device ...").
    text = str(exc)
    if "No space left" in text or "os error 28" in text:
        return True
    if isinstance(exc, RuntimeError) and "write failed" in text:
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free < (1 << 20)
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    `suffix` ends the temporary name (e.g. ".mp4" for writers that pick a format by it).

    Works for files and folders. On an exception the temporary is removed and `path` is
    left as it was, so a crash never leaves a half-written checkpoint, report or dataset; a
    full disk is a MamaError that says so and that the previous file is intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=TEMP_MARK + suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except Exception as exc:  # safetensors' SafetensorError is none of OSError, RuntimeError
        if not _out_of_space(exc, path.parent):
            raise
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        raise MamaError(f"no space left on the device of {path.parent} while writing {path.name}; {kept}; "
                        "free some space and run the command again") from None
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _file_above(path: Path) -> Path | None:
    """The first existing non-folder among the parents of `path` (no folder can be made under it)."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return None


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` may be used as an output folder: it is one, or does not exist yet and can be made."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MamaError(f"{flag} {path} is a file, not a folder; give a folder (new or existing) for the outputs")
    if (blocker := _file_above(path)) is not None:
        raise MamaError(f"{flag} {path}: {blocker} is a file, so no folder can be made under it; "
                        "give a folder (new or existing) for the outputs")
    return path


def check_output_file(path: str | os.PathLike, flag: str, suffixes: tuple[str, ...] = ()) -> Path:
    """`path` may be written as a file: it is not a folder, its folder exists or can be made, and
    its name ends in one of `suffixes` (when given: writers that pick the format by it)."""
    path = Path(path)
    if path.is_dir():
        raise MamaError(f"{flag} {path} is a folder; give the path of the file to write")
    if suffixes and path.suffix.lower() not in suffixes:
        raise MamaError(f"{flag} {path}: the file's name must end in {' or '.join(suffixes)} (the format is picked by "
                        f"it), e.g. {flag} {path.with_suffix(suffixes[0]).name}")
    if (blocker := _file_above(path)) is not None:
        raise MamaError(f"{flag} {path}: {blocker} is a file, so {path.name} cannot be written under it; "
                        "give a path in a folder")
    return path


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, flag: str = "--out", enabled: bool = True):
    """Create `path`, hold its lock while the caller writes into it, and remove the temporaries
    that a killed writer left (none can be in use: the lock is ours). The lock is an flock on
    <path>/.lock, which the system releases when its process ends, even by kill -9."""
    path = check_output_folder(path, flag)
    if not enabled:
        yield path
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise MamaError(f"{flag} {path} is being written by process {holder}; wait for it to finish or give "
                            "another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        for stale in path.glob(f".*{TEMP_MARK}*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        yield path
    finally:
        os.close(fd)  # releases the lock
