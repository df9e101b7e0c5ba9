"""Writing outputs safely: atomic files and folders, a full disk said in words, and output
folders that one process at a time writes into."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from mama.errors import MamaError

TEMP_MARK = ".tmp"  # in the name of every temporary atomic_path makes: .<name>.<random>.tmp[suffix]
LOCK_NAME = ".lock"


def cache_dir() -> Path:
    """Where mama keeps what it can recompute (prepared frames, features): `$MAMA_CACHE`, else
    ~/.cache/mama."""
    env = os.environ.get("MAMA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mama"


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    # torch.save reports a failed write as RuntimeError("... file write failed"), without errno.
    text = str(exc)
    if "No space left" in text:
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_MARK + suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
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


def check_output_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """`path` may be used as an output folder: it is one, or does not exist yet."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MamaError(f"{flag} {path} is a file, not a folder; give a folder (new or existing) for the outputs")
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
