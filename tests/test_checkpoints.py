"""Fetching (resumable, verified), verifying and reading checkpoint files.

Downloads run against a loopback http.server that honours (or, on request, ignores) Range
headers, can cut a transfer short, and can answer with an HTML page.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import threading

import pytest
import torch

from partaware.models import (CheckpointError, fetch_checkpoint, load_checkpoint_file,
                              verify_checkpoint)

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, position-dependent content
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.payload`; `server.mode` in {ok, cut_once, no_range, html, missing}."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if srv.mode == "missing":
            self.send_error(404, "Not Found")
            return
        if srv.mode == "html":
            body = b"<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        data, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and srv.mode != "no_range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "cut_once" and not srv.cut_done:
            srv.cut_done = True
            self.wfile.write(body[: len(body) // 3])  # announce everything, send a third
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.payload, srv.mode, srv.ranges, srv.cut_done = PAYLOAD, "ok", [], False
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/ckpt.pth"
    yield srv
    srv.shutdown()
    srv.server_close()


def fetch(server, dest, sha=DIGEST, **kw):
    return fetch_checkpoint(server.url, dest, sha, backoff=0.0, timeout=10, **kw)


# ----------------------------------------------------------------------------------- fetch

def test_fetch_verifies_publishes_and_records_the_hash(server, tmp_path):
    dest = tmp_path / "sub" / "ckpt.pth"
    assert fetch(server, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "sub" / "ckpt.pth.part").exists()
    assert (tmp_path / "sub" / "ckpt.pth.sha256").read_text().split()[0] == DIGEST
    assert server.ranges == [None]


def test_fetch_resumes_an_existing_partial_file(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD[:300_000])
    fetch(server, dest)
    assert server.ranges == ["bytes=300000-"]
    assert dest.read_bytes() == PAYLOAD


def test_fetch_resumes_after_a_dropped_connection(server, tmp_path):
    server.mode = "cut_once"
    dest = tmp_path / "ckpt.pth"
    fetch(server, dest)
    assert server.ranges[0] is None and server.ranges[1] == f"bytes={len(PAYLOAD) // 3}-"
    assert dest.read_bytes() == PAYLOAD


def test_fetch_restarts_when_the_server_ignores_range(server, tmp_path):
    server.mode = "no_range"
    dest = tmp_path / "ckpt.pth"
    (tmp_path / "ckpt.pth.part").write_bytes(b"x" * 1000)  # garbage that must not be kept
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_with_a_complete_part_file(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    (tmp_path / "ckpt.pth.part").write_bytes(PAYLOAD)  # server answers 416: nothing left
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD


def test_fetch_skips_the_network_for_a_verified_file(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    dest.write_bytes(PAYLOAD)
    fetch(server, dest)
    assert server.ranges == []


def test_fetch_hash_mismatch_keeps_nothing_published(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(CheckpointError) as err:
        fetch(server, dest, sha="ab" * 32)
    msg = str(err.value)
    assert "ab" * 32 in msg and DIGEST in msg and "ckpt.pth.part" in msg
    assert "delete" in msg.lower() and "sha256" in msg
    assert not dest.exists()
    assert (tmp_path / "ckpt.pth.sha256").read_text().split()[0] == DIGEST


def test_fetch_without_expected_hash_records_it(server, tmp_path):
    dest = tmp_path / "ckpt.pth"
    fetch(server, dest, sha=None)
    assert (tmp_path / "ckpt.pth.sha256").read_text().startswith(DIGEST)


def test_fetch_html_page_is_refused(server, tmp_path):
    server.mode = "html"
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(CheckpointError, match="HTML"):
        fetch(server, dest)
    assert not dest.exists() and not (tmp_path / "ckpt.pth.part").exists()


def test_fetch_http_error(server, tmp_path):
    server.mode = "missing"
    with pytest.raises(CheckpointError, match="404"):
        fetch(server, tmp_path / "ckpt.pth")
    assert len(server.ranges) == 1  # a 4xx is not retried


def test_fetch_gives_up_after_repeated_failures(tmp_path):
    with pytest.raises(CheckpointError, match="partial file"):
        fetch_checkpoint("http://127.0.0.1:9/none.pth", tmp_path / "x.pth", None,
                         attempts=2, backoff=0.0, timeout=2)


# ---------------------------------------------------------------------------- verify/load

def test_verify_checkpoint(tmp_path):
    path = tmp_path / "f.pth"
    path.write_bytes(PAYLOAD)
    assert verify_checkpoint(path, DIGEST) == DIGEST
    assert verify_checkpoint(path, None) == DIGEST
    with pytest.raises(CheckpointError) as err:
        verify_checkpoint(path, "cd" * 32)
    msg = str(err.value)
    assert str(path) in msg and "cd" * 32 in msg and DIGEST in msg
    assert "Delete the file" in msg and "`sha256`" in msg


def test_verify_missing_and_html(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "none.pth")
    page = tmp_path / "page.pth"
    page.write_bytes(b"\n  <html><head><title>404</title></head></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        verify_checkpoint(page)


def test_load_checkpoint_file_round_trip_with_namespace(tmp_path):
    path = tmp_path / "c.pth"
    obj = {"model": {"w": torch.arange(6.0)}, "epoch": 3, "args": argparse.Namespace(lr=0.1)}
    torch.save(obj, path)
    got = load_checkpoint_file(path)
    assert torch.equal(got["model"]["w"], torch.arange(6.0)) and got["args"].lr == 0.1


class Opaque:
    """A Python object that weights-only loading refuses."""

    def __init__(self, value):
        self.value = value


def test_load_checkpoint_file_unpickles_other_objects_only_when_trusted_by_hash(tmp_path):
    path = tmp_path / "c.pth"
    torch.save({"model": {"w": torch.ones(2)}, "extra": Opaque(5)}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*c\.pth: its pickle calls "
                                              r"test_checkpoints\.Opaque.*trust_pickle"):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError, match="needs the model entry's `sha256`"):
        load_checkpoint_file(path, trust_pickle=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match=f"expected {'ab' * 32}, found {digest}"):
        load_checkpoint_file(path, trust_pickle=True, sha256="ab" * 32)
    assert load_checkpoint_file(path, trust_pickle=True, sha256=digest)["extra"].value == 5


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_load_truncated_file(tmp_path, keep):
    path = tmp_path / "c.pth"
    torch.save({"model": {"w": torch.randn(5000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint_file(path)
    assert str(path) in str(err.value)


def test_load_garbage_file(tmp_path):
    path = tmp_path / "c.pth"
    path.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint_file(path)


def test_load_html_and_missing(tmp_path):
    page = tmp_path / "p.pth"
    page.write_text("<!doctype html><html></html>")
    with pytest.raises(CheckpointError, match="HTML"):
        load_checkpoint_file(page)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.pth")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
