"""Fetching, verifying and reading checkpoint files.

Official checkpoints are large (up to ~1 GB) and sometimes served by hosts that answer with an
HTML page (quota or login walls). Downloads therefore resume with HTTP Range into `dest.part`,
are hashed before they are published under `dest`, and every failure mode raises one error
class, `CheckpointError`, whose message says what to do next.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import pickle
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

_HTML_MARKERS = (b"<!doctype", b"<html")
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, not a checkpoint, or does not fit the model."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB files do not fill memory."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _looks_like_html(path: Path) -> bool:
    """True when the file starts like a web page (a download that hit a login or quota page)."""
    with open(path, "rb") as f:
        head = f.read(1024).lstrip().lower()
    return any(marker in head for marker in _HTML_MARKERS)


def _check_exists_and_binary(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist; fetch it first "
                              f"(or fix the path in the model config)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path {path} is not a file")
    if _looks_like_html(path):
        raise CheckpointError(
            f"{path} is an HTML page, not a checkpoint (the server answered with a web page, "
            f"e.g. a login, quota or redirect page); delete it and download the file manually "
            f"or fix the url in the model config")


def _mismatch(path: Path, expected: str, found: str) -> CheckpointError:
    return CheckpointError(
        f"sha256 mismatch for {path}: expected {expected}, found {found}. Delete the file and "
        f"fetch it again, or fix `sha256` in the model config if the new file is the right one")


def verify_checkpoint(path: Path, sha256: str | None = None) -> str:
    """Check that `path` is a present, non-HTML file with the expected hash; return its sha256."""
    path = Path(path)
    _check_exists_and_binary(path)
    found = sha256_file(path)
    if sha256 and found != sha256.strip().lower():
        raise _mismatch(path, sha256.strip().lower(), found)
    return found


def _write_sidecar(dest: Path, digest: str) -> None:
    """Record the observed hash next to the file, so a config's `sha256` can be filled in."""
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")


def _expected_total(resp: http.client.HTTPResponse, offset: int) -> int | None:
    """Full file size announced by the server (Content-Range for 206, Content-Length for 200)."""
    content_range = resp.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length")
    return int(length) + offset if length and length.isdigit() else None


def _range_start(resp: http.client.HTTPResponse) -> int | None:
    content_range = resp.headers.get("Content-Range", "")
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _download_once(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`; raise OSError if the transfer ends early."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "partaware-fetch/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part file is complete
            return
        raise
    with resp:
        if offset and (resp.status != 206 or _range_start(resp) != offset):
            log.info("server ignored the resume request for %s; starting over", url)
            offset = 0
        total = _expected_total(resp, offset)
        with open(part, "ab" if offset else "wb") as f:
            while buf := resp.read(_CHUNK):
                f.write(buf)
    size = part.stat().st_size
    if total is not None and size != total:
        raise OSError(f"transfer ended after {size} of {total} bytes")


def fetch_checkpoint(url: str, dest: Path, sha256: str | None = None, *,
                     attempts: int = 4, timeout: float = 60.0, backoff: float = 2.0) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), verify it, then publish it by rename.

    An existing `dest` is only verified. The observed hash is written to `dest.sha256`.
    Network failures are retried, each retry resuming where the last one stopped.
    """
    dest = Path(dest)
    if dest.exists():
        found = verify_checkpoint(dest, sha256)
        _write_sidecar(dest, found)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _download_once(url, part, timeout)
            break
        except urllib.error.HTTPError as err:
            if err.code < 500 or attempt == attempts:
                raise CheckpointError(
                    f"cannot download {url}: HTTP {err.code} {err.reason}") from err
            err_text = f"HTTP {err.code}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if attempt == attempts:
                raise CheckpointError(
                    f"download of {url} failed after {attempts} tries ({err}); the partial file "
                    f"{part} is kept and the next fetch resumes it") from err
            err_text = str(err)
        log.warning("download of %s interrupted (%s); resuming, try %d of %d",
                    url, err_text, attempt + 1, attempts)
        time.sleep(backoff * attempt)
    if _looks_like_html(part):
        part.unlink()
        raise CheckpointError(
            f"{url} returned an HTML page instead of a checkpoint (login, quota or redirect "
            f"page); download the file manually to {dest} or fix the url in the model config")
    found = sha256_file(part)
    _write_sidecar(dest, found)
    if sha256 and found != sha256.strip().lower():
        raise _mismatch(part, sha256.strip().lower(), found)
    os.replace(part, dest)
    log.info("fetched %s -> %s (sha256 %s)", url, dest, found)
    return dest


def load_checkpoint_file(path: Path, *, allow_pickle: bool = True) -> Any:
    """Read a checkpoint onto the CPU, with `weights_only` loading wherever the file allows.

    Official training checkpoints often carry an `argparse.Namespace` (allowed) or other Python
    objects; for those, full unpickling is used when `allow_pickle` (the files are pinned by
    sha256), with a warning.
    """
    path = Path(path)
    _check_exists_and_binary(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower() or not allow_pickle:
            raise _unreadable(path, err) from err
        log.warning("%s holds Python objects beyond tensors; loading it with full unpickling", path)
    except Exception as err:  # zip/EOF/runtime errors of a truncated or corrupt file
        raise _unreadable(path, err) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"cannot read checkpoint {path} ({size} bytes): {first}. The file is probably truncated "
        f"or corrupt: delete it and fetch it again")
