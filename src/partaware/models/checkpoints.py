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


def _official_globals() -> list:
    """What the released training scripts (DeiT, MoCo v3, DINO, iBOT, BEiT, MAE, CAE) pickle
    besides tensors, containers and numbers: the `args` Namespace, and numpy scalars in the
    optimizer's param groups (the lr / weight-decay schedules are numpy arrays), i.e. numpy's
    scalar reconstructor (under its numpy 1 and numpy 2 module names), `numpy.dtype` and the
    numeric dtype classes its state is built on. `collections.OrderedDict` (state dicts) is
    listed although torch allows it by default. All of them only build values."""
    from collections import OrderedDict

    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    dtype_classes = {type(np.dtype(code)) for code in "?bhilqBHILQefd"} - {np.dtype}
    return [argparse.Namespace, OrderedDict, np.dtype,
            (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            *sorted(dtype_classes, key=lambda c: c.__name__)]


OFFICIAL_GLOBALS = _official_globals()


def blocked_globals(path: Path) -> list[str] | None:
    """The globals the file's pickle names beyond tensors and `OFFICIAL_GLOBALS`, read from its
    opcodes without running any; None when the file cannot be read that way (not a torch zip
    file: the legacy format, a truncated file), and weights-only loading alone decides."""
    with torch.serialization.safe_globals(OFFICIAL_GLOBALS):
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:  # unscannable: the weights-only unpickler still guards the load
            return None


_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _reason(err: Exception) -> str:
    """The informative line of an error (torch's weights-only errors wrap it in boilerplate)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)] or lines
    return lines[0] if lines else type(err).__name__


def _refused_global(err: Exception) -> str | None:
    """The global (or class) torch's weights-only unpickler refused, named in its error text."""
    import re

    for pattern in (r"GLOBAL ([\w.]+)", r"got <class '([\w.]+)'>"):
        found = re.search(pattern, str(err))
        if found:  # torch writes builtins without their module: `GLOBAL exec`
            return found.group(1) if "." in found.group(1) else f"builtins.{found.group(1)}"
    return None


def unsafe_pickle_error(path: Path, blocked: list[str]) -> CheckpointError:
    """One line: the file, what its pickle would call, and the opt-in."""
    return CheckpointError(
        f"refusing to load {path}: its pickle calls {', '.join(blocked)}, which is none of the "
        f"tensors, numbers and argparse/numpy values official checkpoints hold, so loading it could "
        f"run code from the file. If you trust the file, set `trust_pickle: true` and the file's "
        f"`sha256` on its model entry (the hash is checked before the file is unpickled)")


def load_checkpoint_file(path: Path, *, trust_pickle: bool = False, sha256: str | None = None) -> Any:
    """Read a checkpoint onto the CPU without running code from it.

    Only tensors, containers, numbers and `OFFICIAL_GLOBALS` are built (torch's weights-only
    unpickler, the extra globals allowed for this call only). A file whose pickle names anything
    else is refused (a torch zip file before unpickling starts, from a scan of its opcodes; a
    legacy file when the unpickler meets the name), unless its model entry opted in with
    `trust_pickle` and a `sha256` that the file matches: only then is it fully unpickled.
    """
    path = Path(path)
    _check_exists_and_binary(path)
    blocked = blocked_globals(path)
    if not blocked:
        try:
            with torch.serialization.safe_globals(OFFICIAL_GLOBALS):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            name = _refused_global(err)
            if name is None and not trust_pickle:  # nothing refused by name: a corrupt file
                raise _unreadable(path, err) from err
            blocked = [name or _reason(err)]
        except Exception as err:  # zip/EOF/runtime errors of a truncated or corrupt file
            raise _unreadable(path, err) from err
    if not trust_pickle:
        raise unsafe_pickle_error(path, blocked)
    if not sha256:
        raise CheckpointError(
            f"refusing to load {path}: `trust_pickle: true` needs the model entry's `sha256` (the "
            f"hash of the file you trust, checked before it is unpickled); add it (`sha256sum "
            f"{path}` prints it)")
    verify_checkpoint(path, sha256)
    log.info("%s: unpickling it fully (trust_pickle, sha256 matches); it calls %s",
             path, ", ".join(blocked))
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    first = _reason(err)
    return CheckpointError(
        f"cannot read checkpoint {path} ({size} bytes): {first}. The file is probably truncated "
        f"or corrupt: delete it and fetch it again")
