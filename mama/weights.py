"""The registry of known pretrained weight files: where they are looked for, how they are
verified, imported and fetched.

Nothing here downloads by itself: a provider that needs a missing file raises a MamaError
saying which file, where to put it and where to get it; only `mama weights fetch` (i.e.
`fetch_weights`) touches the network.

Files are looked for, in order, in
  1. the weights dir: `$MAMA_WEIGHTS`, else `~/.cache/mama/weights` (`mama weights import`
     and `mama weights fetch` install here);
  2. the torch hub cache: `<torch.hub.get_dir()>/checkpoints` (where torchvision keeps
     `deeplabv3_resnet101_coco-586e9e4e.pth`).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from mama.errors import MamaError
from mama.io import atomic_path, writable_folder


@dataclass(frozen=True)
class WeightFile:
    """One known weight file."""

    name: str  # registry key, used by `mama weights fetch NAME` / `import --name NAME`
    file_name: str  # the file's name in the weights dir / hub cache
    purpose: str  # what it is for (shown by `mama weights`)
    architecture: str | None  # what `check_loadable` loads it as; None: no structural check
    sha256: str | None = None  # full digest; None where unknown (then not verified)
    sha256_prefix: str | None = None  # torchvision-style leading hex digits of the digest
    size: int | None = None  # exact size in bytes, None where unknown
    approx_mb: float | None = None  # for display only
    urls: tuple[str, ...] = ()  # direct download URLs, tried in order by `fetch`
    page: str = ""  # where a person gets it by hand

    @property
    def sha256_text(self) -> str:
        if self.sha256:
            return self.sha256
        if self.sha256_prefix:
            return f"{self.sha256_prefix}... (prefix only)"
        return "unknown (not verified)"


def _gdrive(file_id: str) -> str:
    # The direct-download form of a Google Drive file (skips the "too big to scan" page).
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


REGISTRY: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="flownet2sd",
            file_name="FlowNet2-SD_checkpoint.pth.tar",
            purpose="motion provider `flownet2sd` (the paper's flow network)",
            architecture="flownet2sd",
            approx_mb=173,
            urls=(_gdrive("1QW03eyYG_vD-dT-Mx4wopYvtPu_msTKn"), _gdrive("1G3p84hzYRTCboNnJTb3iLwIPiHeNg-D_")),
            page="https://github.com/NVIDIA/flownet2-pytorch#converted-caffe-pre-trained-models",
        ),
        WeightFile(
            name="flownet2",
            file_name="FlowNet2_checkpoint.pth.tar",
            purpose="motion provider `flownet2` (full FlowNet2, slower, more accurate)",
            architecture="flownet2",
            approx_mb=620,
            urls=(_gdrive("1hF8vS6YeHkx3j2pfCeQqqZGwA_PJq_Da"),),
            page="https://github.com/NVIDIA/flownet2-pytorch#converted-caffe-pre-trained-models",
        ),
        WeightFile(
            name="deeplabv3_resnet101",
            file_name="deeplabv3_resnet101_coco-586e9e4e.pth",
            purpose="label provider `deeplabv3` (torchvision COCO-with-VOC-labels weights)",
            architecture="deeplabv3_resnet101",
            sha256_prefix="586e9e4e",
            approx_mb=233.2,
            urls=("https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth",),
            page="https://pytorch.org/hub/pytorch_vision_deeplabv3_resnet101/",
        ),
    )
}


def weights_dir() -> Path:
    """Where `mama weights` installs files: `$MAMA_WEIGHTS` or `~/.cache/mama/weights`."""
    env = os.environ.get("MAMA_WEIGHTS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mama" / "weights"


def writable_weights_dir(create: bool = True) -> Path:
    """The weights dir, created (or, without `create`, only checked creatable) and checked
    writable: a MamaError naming MAMA_WEIGHTS if not."""
    return writable_folder(weights_dir(), "MAMA_WEIGHTS", weights_dir(), "the weights dir",
                           "(e.g. export MAMA_WEIGHTS=~/mama-weights)", create)


def hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint cache (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs() -> list[Path]:
    return [weights_dir(), hub_checkpoints_dir()]


def lookup(name: str) -> WeightFile:
    """The registry entry `name`, or a MamaError listing the known names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise MamaError(f"unknown weights name {name!r}; known: {', '.join(REGISTRY)}") from None


def find_weights(name: str) -> Path | None:
    """The first existing copy of the registered file in the search dirs, else None."""
    entry = lookup(name)
    for folder in search_dirs():
        candidate = folder / entry.file_name
        if candidate.is_file():
            return candidate
    return None


def missing_message(entry: WeightFile) -> str:
    """One line: which file, where it was looked for, where to get it and how to install it."""
    where = " or ".join(str(d) for d in search_dirs())
    return (
        f"weights for {entry.name} not found: {entry.file_name} is in neither {where}; "
        f"get it from {entry.page} (or run `mama weights fetch {entry.name}`), then install it "
        f"with `mama weights import FILE` (it goes to the weights dir {weights_dir()}; "
        f"`mama weights` lists what is found)"
    )


def resolve_weights(name: str, path: str | os.PathLike | None = None) -> Path:
    """The file to load for registry entry `name`: `path` if given, else the first copy found.

    Raises MamaError (one line) when the given file does not exist or no copy is found.
    """
    entry = lookup(name)
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise MamaError(
                f"weights file {path} does not exist; pass the path of {entry.file_name} "
                f"(get it from {entry.page}) or omit it to use the weights dir {weights_dir()}"
            )
        return path
    found = find_weights(name)
    if found is None:
        raise MamaError(missing_message(entry))
    return found


# ---- verification ------------------------------------------------------------------------

def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_digest(entry: WeightFile, path: Path) -> None:
    """Size and sha256 (or its known prefix) against the registry; MamaError on a mismatch."""
    if entry.size is not None and path.stat().st_size != entry.size:
        raise MamaError(
            f"{path} has {path.stat().st_size} bytes, but {entry.file_name} has {entry.size}; "
            f"get the right file from {entry.page}"
        )
    if entry.sha256 is None and entry.sha256_prefix is None:
        return
    actual = sha256_of(path)
    expected = entry.sha256 or entry.sha256_prefix
    if not actual.startswith(expected):
        raise MamaError(
            f"{path} has sha256 {actual}, expected {entry.sha256_text} for {entry.file_name}; "
            f"the file is corrupt or a different one: get it again from {entry.page}"
        )


def check_loadable(entry: WeightFile, path: Path) -> None:
    """Load `path` into the entry's architecture (strict); MamaError if it does not fit."""
    if entry.architecture is None:
        return
    if entry.architecture == "deeplabv3_resnet101":
        from mama.models.deeplab import build_deeplabv3

        build_deeplabv3(weights=path)  # raises MamaError on a bad file
    elif entry.architecture in ("flownet2sd", "flownet2"):
        from mama.models.flownet2 import load_flownet

        load_flownet(entry.architecture, path, "cpu")  # raises MamaError on a bad file
    else:  # a registry bug, not a user's mistake
        raise ValueError(f"no loader for architecture {entry.architecture!r}")


def verify_file(entry: WeightFile, path: Path) -> None:
    check_digest(entry, path)
    check_loadable(entry, path)


# ---- import / fetch ----------------------------------------------------------------------

def entry_for_file(path: Path, name: str | None) -> WeightFile:
    """The registry entry a file is imported as: `name`, else the one with the same file name."""
    if name is not None:
        return lookup(name)
    for entry in REGISTRY.values():
        if entry.file_name == path.name:
            return entry
    raise MamaError(
        f"cannot tell which weights {path} is (its name matches no known file); "
        f"pass --name with one of: {', '.join(REGISTRY)}"
    )


def import_weights(path: str | os.PathLike, name: str | None = None) -> Path:
    """Verify `path` and copy it atomically into the weights dir; return the installed path."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MamaError(f"{path} does not exist; pass the path of a downloaded weights file")
    entry = entry_for_file(path, name)
    dest = writable_weights_dir(create=False) / entry.file_name  # checked before the (slow) verification
    verify_file(entry, path)
    with atomic_path(dest) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
    return dest


def _manual(entry: WeightFile) -> str:
    return f"download {entry.file_name} by hand from {entry.page} and run `mama weights import FILE`"


def _download(url: str, part: Path, entry: WeightFile, timeout: float) -> None:
    """Download `url` into `part`, resuming from its current size with an HTTP Range request."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mama-weights"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            return  # the partial file is already complete; the digest check decides
        raise
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the range: start over
        if "text/html" in response.headers.get("Content-Type", ""):
            raise MamaError(f"{url} returned a web page, not {entry.file_name}; {_manual(entry)}")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns) as progress, open(part, "ab" if have else "wb") as out:
            task = progress.add_task(entry.file_name, total=total, completed=have)
            while block := response.read(1 << 16):
                out.write(block)
                progress.advance(task, len(block))


def fetch_weights(name: str, url: str | None = None, timeout: float = 30.0) -> Path:
    """Download registry entry `name` into the weights dir, resuming `<file>.part`.

    The digest (and, where the digest is unknown, a strict load into the architecture) is
    checked before the atomic rename; a bad download is deleted. Network errors keep the
    partial file for the next try and raise a MamaError naming the URL and the manual way.
    """
    entry = lookup(name)
    if url is not None and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise MamaError(f"--url {url}: only http:// and https:// downloads are fetched; for a file on disk use "
                        "`mama weights import FILE`")
    urls = (url,) if url else entry.urls
    if not urls:
        raise MamaError(f"no download URL is known for {entry.name}; {_manual(entry)}")
    dest = writable_weights_dir() / entry.file_name
    part = dest.with_name(dest.name + ".part")
    failures = []
    for candidate in urls:
        try:
            _download(candidate, part, entry, timeout)
            break
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            failures.append(f"{candidate} ({getattr(exc, 'reason', None) or exc})")
    else:
        raise MamaError(f"could not download {entry.file_name} from {'; '.join(failures)}; {_manual(entry)}")
    try:
        if entry.sha256 is None and entry.sha256_prefix is None:
            check_loadable(entry, part)  # nothing else to verify it by
        else:
            check_digest(entry, part)
    except MamaError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest
