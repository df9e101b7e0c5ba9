"""`mama weights` (list / import / fetch) against a local HTTP server; no network, no real weights."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import threading

import pytest
import torch
from mama.cli.app import main

from mama import weights as registry

DEEPLAB_FILE = "deeplabv3_resnet101_coco-586e9e4e.pth"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` (path -> bytes), honouring `Range: bytes=N-` unless the path
    starts with /norange/; logs (path, Range header, bytes sent) in `server.log`."""

    def do_GET(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        wanted = self.headers.get("Range")
        start = 0
        if wanted and not self.path.startswith("/norange/"):
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                self.server.log.append((self.path, wanted, 0))
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", self.server.content_types.get(self.path, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.log.append((self.path, wanted, len(body)))

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.log, httpd.content_types = {}, [], {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """An empty weights dir and torch hub cache; a wide terminal so table rows are whole."""
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("COLUMNS", "400")
    return tmp_path / "weights", tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def payload():
    return torch.randint(0, 256, (300_000,), generator=torch.Generator().manual_seed(7), dtype=torch.uint8).numpy().tobytes()


@pytest.fixture
def toy(monkeypatch, server, payload):
    """A registry entry for a test file served by `server` (no architecture to load)."""
    entry = registry.WeightFile(
        name="toy", file_name="toy.bin", purpose="tests", architecture=None,
        sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
        urls=(f"{server.url}/toy.bin",), page="https://example.invalid/toy",
    )
    monkeypatch.setitem(registry.REGISTRY, "toy", entry)
    server.files["/toy.bin"] = payload
    return entry


def leftovers(folder):
    return sorted(os.listdir(folder)) if folder.exists() else []


# ---- list --------------------------------------------------------------------------------

def test_list_shows_each_file_its_status_hash_and_the_searched_dirs(dirs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    weights_dir, hub = dirs
    hub.mkdir(parents=True)
    (hub / DEEPLAB_FILE).write_bytes(b"x")
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    rows = _blocks(out)
    assert set(rows) == {"flownet2sd", "flownet2", "deeplabv3_resnet101"}
    assert "missing" in rows["flownet2sd"] and "file   FlowNet2-SD_checkpoint.pth.tar" in rows["flownet2sd"]
    assert "sha256 unknown (not verified)" in rows["flownet2sd"]
    assert "found" in rows["deeplabv3_resnet101"] and f"path   {hub / DEEPLAB_FILE}" in rows["deeplabv3_resnet101"]
    assert "586e9e4e" in rows["deeplabv3_resnet101"]
    assert str(weights_dir) in " ".join(out.split()) and str(hub) in " ".join(out.split())
    # It fits an 80-column terminal, but for a path longer than a line (kept whole, to copy).
    assert all(len(line) <= 80 for line in out.splitlines() if not line.startswith("  path")), out


def _blocks(out: str) -> dict[str, str]:
    """`mama weights` output -> {name: its block of lines}."""
    blocks, name = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" ") and ("found" in line.split()[1:2] or "missing" in line.split()[1:2]):
            name = line.split()[0]
            blocks[name] = line
        elif name and line.startswith("  "):
            blocks[name] += "\n" + line
        else:
            name = None
    return blocks


# ---- import ------------------------------------------------------------------------------

def test_import_verifies_and_installs(dirs, toy, payload, tmp_path, capsys):
    weights_dir, _ = dirs
    source = tmp_path / "download" / "toy.bin"  # known by its file name: no --name needed
    source.parent.mkdir()
    source.write_bytes(payload)
    assert main(["weights", "import", str(source)]) == 0
    assert (weights_dir / "toy.bin").read_bytes() == payload
    assert leftovers(weights_dir) == ["toy.bin"]
    capsys.readouterr()
    assert main(["weights"]) == 0
    row = _blocks(capsys.readouterr().out)["toy"]
    assert "found" in row and "missing" not in row


def test_import_rejects_a_wrong_file_and_leaves_nothing(dirs, toy, payload, tmp_path, capsys):
    weights_dir, _ = dirs
    bad = tmp_path / "other.bin"
    bad.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # same size, one bit off
    assert main(["weights", "import", str(bad), "--name", "toy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "other.bin has sha256" in err and toy.sha256 in err
    assert leftovers(weights_dir) == []

    short = tmp_path / "short.bin"
    short.write_bytes(payload[:100])
    assert main(["weights", "import", str(short), "--name", "toy"]) == 2
    assert "short.bin has 100 bytes" in capsys.readouterr().err

    assert main(["weights", "import", str(bad)]) == 2  # name unknown, none given
    assert "pass --name with one of: flownet2sd, flownet2, deeplabv3_resnet101, toy" in capsys.readouterr().err
    assert main(["weights", "import", str(tmp_path / "absent.bin")]) == 2
    assert "absent.bin does not exist" in capsys.readouterr().err
    assert leftovers(weights_dir) == []


def test_import_loads_the_file_as_its_architecture(dirs, monkeypatch, tmp_path, capsys):
    weights_dir, _ = dirs
    # without the known hash prefix, the structural check is what rejects a wrong file
    entry = dataclasses.replace(registry.REGISTRY["deeplabv3_resnet101"], sha256_prefix=None)
    monkeypatch.setitem(registry.REGISTRY, "deeplabv3_resnet101", entry)
    wrong = tmp_path / DEEPLAB_FILE
    torch.save(torch.nn.Conv2d(3, 8, 3).state_dict(), wrong)
    assert main(["weights", "import", str(wrong)]) == 2
    assert "is not a deeplabv3_resnet101 state dict" in capsys.readouterr().err
    assert leftovers(weights_dir) == []


def test_import_checks_the_known_hash_prefix(dirs, tmp_path, capsys):
    fake = tmp_path / DEEPLAB_FILE
    fake.write_bytes(b"not torchvision's file")
    assert main(["weights", "import", str(fake)]) == 2
    assert "expected 586e9e4e... (prefix only)" in capsys.readouterr().err
    assert leftovers(dirs[0]) == []


# ---- fetch -------------------------------------------------------------------------------

def test_fetch_downloads_verifies_and_installs(dirs, toy, payload, server):
    weights_dir, _ = dirs
    assert main(["weights", "fetch", "toy"]) == 0
    assert (weights_dir / "toy.bin").read_bytes() == payload
    assert leftovers(weights_dir) == ["toy.bin"]  # no .part left
    assert server.log == [("/toy.bin", None, len(payload))]


def test_fetch_resumes_a_partial_download(dirs, toy, payload, server):
    weights_dir, _ = dirs
    weights_dir.mkdir(parents=True)
    have = 123_457
    (weights_dir / "toy.bin.part").write_bytes(payload[:have])
    assert main(["weights", "fetch", "toy"]) == 0
    assert (weights_dir / "toy.bin").read_bytes() == payload
    assert server.log == [("/toy.bin", f"bytes={have}-", len(payload) - have)]  # only the rest
    assert leftovers(weights_dir) == ["toy.bin"]


def test_fetch_starts_over_when_the_server_ignores_the_range(dirs, toy, payload, server):
    weights_dir, _ = dirs
    weights_dir.mkdir(parents=True)
    (weights_dir / "toy.bin.part").write_bytes(b"\0" * 1000)
    server.files["/norange/toy.bin"] = payload
    assert main(["weights", "fetch", "toy", "--url", f"{server.url}/norange/toy.bin"]) == 0
    assert (weights_dir / "toy.bin").read_bytes() == payload
    assert server.log == [("/norange/toy.bin", "bytes=1000-", len(payload))]


def test_fetch_checksum_mismatch_leaves_no_file(dirs, toy, payload, server, capsys):
    weights_dir, _ = dirs
    server.files["/tampered.bin"] = payload[::-1]  # right size, wrong bytes
    assert main(["weights", "fetch", "toy", "--url", f"{server.url}/tampered.bin"]) == 2
    err = capsys.readouterr().err
    assert "toy.bin.part has sha256" in err and toy.sha256 in err and "example.invalid/toy" in err
    assert leftovers(weights_dir) == []


def test_fetch_unreachable_url_names_it_and_the_manual_way(dirs, toy, capsys):
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/toy.bin"
    assert main(["weights", "fetch", "toy", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"could not download toy.bin from {url}" in err
    assert "by hand from https://example.invalid/toy and run `mama weights import FILE`" in err
    assert leftovers(dirs[0]) == []


def test_fetch_http_errors_and_web_pages_are_refused(dirs, toy, server, capsys):
    assert main(["weights", "fetch", "toy", "--url", f"{server.url}/missing.bin"]) == 2
    assert f"{server.url}/missing.bin (Not Found)" in capsys.readouterr().err
    server.files["/page"] = b"<html>sign in to download</html>"
    server.content_types["/page"] = "text/html; charset=utf-8"
    assert main(["weights", "fetch", "toy", "--url", f"{server.url}/page"]) == 2
    assert "returned a web page, not toy.bin" in capsys.readouterr().err
    assert leftovers(dirs[0]) == []


def test_fetch_unknown_name_lists_the_known_ones(dirs, capsys):
    assert main(["weights", "fetch", "resnet"]) == 2
    assert "unknown weights name 'resnet'; known: flownet2sd, flownet2, deeplabv3_resnet101" in capsys.readouterr().err
