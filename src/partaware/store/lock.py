"""One writer per store: an exclusive lock file beside the store being written.

`<store>.lock` names its owner (host, pid, start time) and is locked with `flock`, which the
kernel drops when the owner dies, so a lock left by a killed job is taken over (and logged),
while a live orphan (a writer whose Snakemake was killed) makes a second writer refuse instead
of resuming into the same `.partial` store. Where the file system has no `flock`, the lock is
the file's exclusive creation; a lock of a dead process on this host is then taken over by its
pid, one of another host must be removed by hand (the refusal says so).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeldError(ValueError):
    """Another live writer holds the lock; the message names it and what to do."""


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:  # never signal a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def read_owner(path: Path) -> dict:
    """The owner recorded in a lock file ({} when absent or being written)."""
    try:
        owner = json.loads(Path(path).read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _refusal(path: Path, what: str, owner: dict, flocked: bool) -> str:
    pid, host, since = owner.get("pid", "?"), owner.get("host", "?"), owner.get("since", "?")
    here = host == socket.gethostname()
    stop = f"`kill {pid}`" + ("" if here else f" on {host}")
    if here and not _alive(pid):
        if flocked:  # the owner died, a process it started (a loader worker) still holds the lock
            stop = f"pid {pid} has ended but a process it started holds the lock: `fuser -v {path}`"
        else:
            stop = f"remove {path}"
    elif not flocked and not here:
        stop += f", or remove {path} if that job is gone"
    return (f"{what}: another writer holds this store (pid {pid} on host {host}, since {since}; "
            f"lock {path}); wait for it to finish, or stop it ({stop}) and rerun")


def _log_takeover(what: str, path: Path, owner: dict) -> None:
    log.warning("%s: taking over the lock %s left by pid %s on host %s (since %s), which no "
                "longer holds it", what, path, owner.get("pid"), owner.get("host"), owner.get("since", "?"))


class StoreLock:
    """This process's exclusive hold on one lock file, until `release` (or its death)."""

    _held: dict[str, "StoreLock"] = {}

    def __init__(self, path: Path, fd: int, flocked: bool):
        self.path, self.fd, self.flocked, self.pid = path, fd, flocked, os.getpid()
        self.token = None  # which writer of this process holds it now (see writer.StoreWriter)
        self.writer = None

    @classmethod
    def acquire(cls, path: Path | str, what: str) -> "StoreLock":
        """Take the lock at `path` for the store `what`, or raise LockHeldError naming the owner.

        A lock this process already holds is returned as it is: the caller replaces its
        abandoned writer (a crashed call, a test) rather than being refused by itself.
        """
        path = Path(path).absolute()
        held = cls._held.get(str(path))
        if held is not None and held.pid == os.getpid() and held.fd is not None:
            return held
        path.parent.mkdir(parents=True, exist_ok=True)
        flock = True
        for _ in range(20):
            lock = cls._flock(path, what) if flock else cls._exclusive(path, what)
            if lock == "unsupported":  # this file system has no flock: exclusive creation from now on
                flock, lock = False, None
            if lock is not None:
                break
        else:
            raise LockHeldError(f"{what}: cannot lock {path}: it keeps being replaced; rerun")
        previous = read_owner(path)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        if previous.get("pid") and {k: previous.get(k) for k in me} != me:
            _log_takeover(what, path, previous)
        data = json.dumps({**me, "since": time.strftime("%Y-%m-%d %H:%M:%S"), "store": what}).encode()
        os.ftruncate(lock.fd, 0)
        os.pwrite(lock.fd, data, 0)
        os.fsync(lock.fd)
        cls._held[str(path)] = lock
        return lock

    @classmethod
    def _flock(cls, path: Path, what: str):
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            try:
                fd, created = os.open(path, os.O_RDWR), False
            except FileNotFoundError:  # removed by its holder meanwhile: try again
                return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeldError(_refusal(path, what, read_owner(path), True)) from None
        except OSError as err:
            if err.errno in _NO_FLOCK and created:  # no flock, but we created it exclusively
                return cls(path, fd, False)
            os.close(fd)
            if err.errno in _NO_FLOCK:
                return "unsupported"
            raise
        try:  # its last holder may have removed it between our open and flock: lock the new one
            same = os.path.samestat(os.stat(path), os.fstat(fd))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return None
        return cls(path, fd, True)

    @classmethod
    def _exclusive(cls, path: Path, what: str):
        try:
            return cls(path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), False)
        except FileExistsError:
            owner = read_owner(path)
            if owner.get("host") == socket.gethostname() and not _alive(owner.get("pid")):
                _log_takeover(what, path, owner)
                path.unlink(missing_ok=True)  # a dead writer of this host: retry the creation
                return None
            raise LockHeldError(_refusal(path, what, owner, False)) from None

    def release(self) -> None:
        """Remove the lock file, then unlock (only in the process that took it)."""
        if self.fd is None or self.pid != os.getpid():
            return
        if StoreLock._held.get(str(self.path)) is self:
            del StoreLock._held[str(self.path)]
        try:
            if os.path.samestat(os.stat(self.path), os.fstat(self.fd)):
                os.unlink(self.path)
        except OSError:
            pass
        try:
            if self.flocked:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = None
