"""A throwaway single-node SLURM cluster for integration tests.

Starts a real SLURM from Debian's packages (``slurmctld``, ``slurmd``, ``munge``; install them
with ``.ci/slurm-setup.sh``) on this machine, as root, and tears it down again::

    with slurm_cluster(tmp_dir) as cluster:
        job = cluster.sbatch("--wrap", "hostname")
        cluster.wait_for_job(job)

What it does, in order:

1. takes an exclusive lock (``/run/lock/partaware-slurm-test.lock``) so two test processes
   never fight over ``/etc/slurm/slurm.conf`` (the second waits), then refuses
   (:class:`SlurmUnavailable`) if slurmctld/slurmd processes not its own are running;
2. writes a fresh munge key (1024 random bytes, root-owned, mode 0400 -- munged running as
   root demands its key be owned by root and unreadable by others) and starts its own
   ``munged -F`` on a private socket.  munged insists that every directory above its socket
   be executable by all, which pytest's ``/tmp/pytest-of-root`` (mode 0700) is not, so the
   socket lives in a ``/tmp/partaware-munge-*`` directory (0755); ``AuthInfo=socket=...`` in
   slurm.conf points every SLURM daemon and client at it, so the system munged (if any) and
   ``/run/munge`` are left alone;
3. writes ``/etc/slurm/slurm.conf`` and ``gres.conf`` next to it -- SLURM's default
   location: the ``srun`` that snakemake's ``slurm-jobstep`` executor runs inside each job
   drops ``SLURM_CONF`` from its environment, so the file has to be where SLURM looks by
   default.  Existing files are backed up and put back on exit; a stale file left behind by
   a killed earlier run (it carries :data:`MARKER`) is not treated as an original;
4. starts ``slurmctld -D`` and ``slurmd -D`` as child processes (their pids are the
   ``Popen`` pids; pid files, state, spool and logs live under the given directory) on two
   free TCP ports;
5. waits (default 60 s) until ``sinfo`` reports the node ``idle``; on failure the error
   carries the tails of the daemons' logs;
6. on exit: cancels remaining jobs, stops slurmd, slurmctld and munged by their pids
   (SIGTERM, wait, SIGKILL), restores ``/etc/slurm/{slurm,gres}.conf``, removes the socket
   dir.  (A SIGKILLed test run leaves its daemons running -- they are in their own session;
   the next run then refuses to start and names their pids.)

No accounting (``accounting_storage/none``): ``sacct`` and ``sacctmgr`` fail (``sshare`` is empty) on
this cluster; job state is only visible through ``squeue``/``scontrol`` for ``MinJobAge``
(an hour here) after a job ends.  No cgroups (``proctrack/linuxproc``, ``task/none``), so memory
and CPU limits are bookkept by the scheduler but not enforced.  No real GPUs; optionally
fake ones (``fake_gpus=N``: a ``gpu`` GRES backed by empty files) so that ``--gpus=1`` jobs
are accepted.

:func:`require_slurm` skips the calling test when the binaries are missing or we are not
root, and :func:`skip_or_fail` does the same for a :class:`SlurmUnavailable` raised by
:func:`slurm_cluster` (SLURM daemons not ours already running) -- except under ``CI=true``,
where both are failures.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

MARKER = "# written by partaware tests/slurm_cluster.py"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = SLURM_CONF.with_name("gres.conf")  # read from slurm.conf's directory
LOCK_FILE = Path("/run/lock/partaware-slurm-test.lock")
PARTITION = "debug"
BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel",
            "scontrol", "srun")
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here (missing packages, not root, a foreign slurmctld running)."""


class SlurmClusterError(RuntimeError):
    """The test cluster did not come up (or a job did not finish)."""


def _search_path() -> str:
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [p for p in _SBIN if p not in parts])


def find_binaries() -> dict[str, str]:
    """Absolute paths of the SLURM/munge binaries; raises SlurmUnavailable naming the missing."""
    path = _search_path()
    found = {name: shutil.which(name, path=path) for name in BINARIES}
    missing = sorted(name for name, p in found.items() if p is None)
    if missing:
        raise SlurmUnavailable(
            f"missing SLURM/munge binaries: {', '.join(missing)} "
            "(install with .ci/slurm-setup.sh: apt-get install slurmctld slurmd slurm-client munge)")
    return found  # type: ignore[return-value]


def _foreign_daemons() -> list[str]:
    """Running slurmctld/slurmd processes (not ours): we would clobber their slurm.conf."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
        except OSError:
            continue
        if comm in ("slurmctld", "slurmd"):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                cmd = comm
            found.append(f"pid {proc.name}: {cmd}")
    return found


def check_available() -> dict[str, str]:
    """Raise SlurmUnavailable unless we are root and the binaries are there."""
    if os.geteuid() != 0:
        raise SlurmUnavailable("the SLURM test cluster must run as root (it writes /etc/slurm)")
    return find_binaries()


def _check_no_foreign_daemons() -> None:
    foreign = _foreign_daemons()
    if foreign:
        raise SlurmUnavailable(
            "SLURM daemons already running on this machine (" + "; ".join(foreign)
            + "); refusing to overwrite their /etc/slurm/slurm.conf (if they are leftovers of a "
            "killed test run, stop them by these pids)")


def skip_or_fail(reason: str) -> None:
    """pytest.skip(reason), or pytest.fail under CI=true (where SLURM must work)."""
    import pytest

    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI=true but SLURM is unavailable: {reason}")
    pytest.skip(reason)


def require_slurm() -> dict[str, str]:
    """For tests: skip when SLURM is unavailable, fail instead when CI=true."""
    try:
        return check_available()
    except SlurmUnavailable as exc:
        skip_or_fail(str(exc))
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meminfo_mb(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(key)


def _hw_topology(slurmd: str) -> str:
    """Socket/core/thread layout from ``slurmd -C`` (else slurmd "reconfigures" the node)."""
    try:
        out = subprocess.run([slurmd, "-C"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    keep = ("Boards=", "SocketsPerBoard=", "CoresPerSocket=", "ThreadsPerCore=")
    fields = [t for t in out.split() if t.startswith(keep)]
    return "".join(" " + t for t in fields) if len(fields) == len(keep) else ""


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(lines[-n:])


def _client_env() -> dict[str, str]:
    """This process's environment minus anything that would point SLURM clients elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_", "SINFO_"))}
    env["PATH"] = _search_path()
    return env


@dataclass
class SlurmCluster:
    """A running single-node cluster (see the module docstring)."""

    root: Path                  # state, spool, pid files and logs
    node: str                   # the node's name (``hostname -s``)
    cpus: int
    real_memory_mb: int
    fake_gpus: int = 0          # GRES "gpu" count without devices (see slurm_cluster)
    topology: str = ""          # " Boards=.. SocketsPerBoard=.. ..." as ``slurmd -C`` sees it
    partition: str = PARTITION
    conf: Path = SLURM_CONF
    bin: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=_client_env)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``cluster.run("sinfo", "-N")``) with the cluster's env."""
        return subprocess.run(list(args), env=kw.pop("env", self.env), text=True,
                              capture_output=True, check=check, timeout=timeout, **kw)

    def sbatch(self, *args: str, cwd: Path | str | None = None) -> str:
        """Submit with ``sbatch --parsable -p <partition> *args``; return the job id.

        Runs in ``cwd`` (default ``<root>/jobs``, where ``slurm-<id>.out`` then lands)."""
        if cwd is None:
            cwd = self.root / "jobs"
            cwd.mkdir(exist_ok=True)
        out = self.run("sbatch", "--parsable", "-p", self.partition, *args, cwd=cwd)
        return out.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str | None:
        """JobState from ``scontrol show job`` (None once slurmctld has forgotten the job)."""
        res = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        if res.returncode != 0:
            return None
        for tok in res.stdout.split():
            if tok.startswith("JobState="):
                return tok.split("=", 1)[1]
        return None

    def wait_for_job(self, job_id: str, timeout: float = 120) -> str:
        """Wait until the job leaves PENDING/RUNNING/...; return its final state."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED"):
                return state
            time.sleep(0.5)
        raise SlurmClusterError(
            f"job {job_id} still {state} after {timeout:.0f} s\n{self.diagnostics()}")

    def diagnostics(self, n: int = 40) -> str:
        """Node state plus the tails of the daemons' logs, for error messages."""
        parts = []
        for cmd in (("sinfo", "-N", "-l"), ("squeue", "-l")):
            try:
                res = self.run(*cmd, check=False, timeout=10)
                parts.append(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}")
            except Exception as exc:  # noqa: BLE001 -- diagnostics must not raise
                parts.append(f"$ {' '.join(cmd)}: {exc}")
        for name, proc in self.procs.items():
            rc = proc.poll()
            parts.append(f"{name}: pid {proc.pid}, "
                         + ("running" if rc is None else f"exited with {rc}"))
        for log in sorted(self.log_dir.glob("*")):
            parts.append(f"--- {log.name} (last {n} lines) ---\n{_tail(log, n)}")
        return "\n".join(parts)


def _write_conf(cluster: SlurmCluster, munge_socket: Path, ports: tuple[int, int]) -> str:
    r = cluster.root
    gres = f" Gres=gpu:{cluster.fake_gpus}" if cluster.fake_gpus else ""
    return f"""{MARKER} -- a throwaway single-node test cluster.
# It is removed (and any previous slurm.conf restored) when the test ends; if you find it
# here, a test run was killed: delete it, or move back {r}/slurm.conf.orig if that exists.
ClusterName=partawaretest
SlurmctldHost={cluster.node}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={cluster.log_dir}/slurmctld.log
SlurmdLogFile={cluster.log_dir}/slurmd.log
MailProg=/bin/true
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
{"GresTypes=gpu" if cluster.fake_gpus else "# no GRES"}
NodeName={cluster.node} NodeAddr=127.0.0.1 CPUs={cluster.cpus}{cluster.topology} RealMemory={cluster.real_memory_mb}{gres} State=UNKNOWN
PartitionName={cluster.partition} Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
"""


def _install(path: Path, text: str, root: Path, stack: contextlib.ExitStack) -> None:
    """Write ``path``; on exit put back what was there (kept meanwhile as root/<name>.orig).

    A file carrying MARKER is the leftover of a killed test run, not an original."""
    backup = root / (path.name + ".orig")
    had_original = path.exists() and MARKER not in path.read_text(errors="replace")
    if had_original:
        shutil.copy2(path, backup)

    def restore() -> None:
        if had_original:
            shutil.copy2(backup, path)
        else:
            path.unlink(missing_ok=True)

    path.parent.mkdir(parents=True, exist_ok=True)
    stack.callback(restore)
    path.write_text(text)
    (root / path.name).write_text(text)  # a copy, for the record


def _stop(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _start(cluster: SlurmCluster, name: str, argv: list[str]) -> subprocess.Popen:
    out = open(cluster.log_dir / f"{name}.out", "ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=cluster.env,
                                start_new_session=True)
    finally:
        out.close()
    cluster.procs[name] = proc
    return proc


def _wait(cluster: SlurmCluster, what: str, ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        dead = [f"{n} exited with {p.returncode}" for n, p in cluster.procs.items()
                if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = "; ".join(dead) if dead else f"timed out after {timeout:.0f} s"
            raise SlurmClusterError(
                f"SLURM test cluster: {what} not ready ({why})\n{cluster.diagnostics()}")
        time.sleep(0.5)


@contextlib.contextmanager
def slurm_cluster(tmp_path: Path | str, *, timeout: float = 60,
                  fake_gpus: int = 0) -> Iterator[SlurmCluster]:
    """Start a single-node SLURM cluster under ``tmp_path``; stop it and clean up on exit.

    ``fake_gpus=N`` declares N ``gpu`` GRES on the node without any device behind them
    (gres.conf ``File=`` points at empty files): ``sbatch --gpus=1`` / ``--gres=gpu:1`` are then
    accepted and scheduled (at most N such jobs at once), the job simply finds no GPU.
    """
    binaries = check_available()
    root = Path(tmp_path).resolve() / "slurm"
    cluster = SlurmCluster(
        root=root,
        node=socket.gethostname().split(".")[0],
        cpus=os.cpu_count() or 1,
        # leave room for the OS and for snakemake itself running outside SLURM
        real_memory_mb=max(1024, min(int(_meminfo_mb("MemAvailable") * 0.8),
                                     _meminfo_mb("MemTotal") - 2048)),
        bin=binaries,
        fake_gpus=fake_gpus,
        topology=_hw_topology(binaries["slurmd"]),
    )
    for sub in ("state", "spool", "run", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)

    with contextlib.ExitStack() as stack:
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(LOCK_FILE, "w"))
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another test process holds the cluster: queue
        _check_no_foreign_daemons()  # under the lock: a queued run sees none of ours

        # --- munge: private key, private daemon, private socket ------------------------
        key = root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chown(key, 0, 0)
        os.chmod(key, 0o400)
        sock_dir = Path(tempfile.mkdtemp(prefix="partaware-munge-", dir="/tmp"))
        stack.callback(shutil.rmtree, sock_dir, True)
        os.chmod(sock_dir, 0o755)
        munge_socket = sock_dir / "munge.socket"

        # --- slurm.conf at the default location, backed up and restored ----------------
        ports = (_free_port(), _free_port())
        while ports[1] == ports[0]:
            ports = (ports[0], _free_port())
        # Fake GPUs: a gpu GRES needs a device file; empty regular files named like
        # /dev/nvidiaN do (slurm takes the index from the name and exports
        # CUDA_VISIBLE_DEVICES=N to the job; there is no GPU behind it).
        gres_lines = [MARKER]
        for i in range(cluster.fake_gpus):
            dev = root / "fakegpu" / f"nvidia{i}"
            dev.parent.mkdir(exist_ok=True)
            dev.touch()
            gres_lines.append(f"NodeName={cluster.node} Name=gpu File={dev}")
        if not cluster.fake_gpus:
            gres_lines.append("# no GRES on this test cluster")
        gres_conf = "\n".join(gres_lines) + "\n"
        _install(SLURM_CONF, _write_conf(cluster, munge_socket, ports), root, stack)
        _install(GRES_CONF, gres_conf, root, stack)

        # Stopped in reverse order of starting: slurmd, slurmctld, munged.
        stack.callback(lambda: [_stop(p) for p in reversed(list(cluster.procs.values()))])

        _start(cluster, "munged", [
            binaries["munged"], "-F", f"--socket={munge_socket}", f"--key-file={key}",
            f"--pid-file={root / 'run' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
            f"--log-file={cluster.log_dir / 'munged.log'}", "--num-threads=4",
        ])

        def munge_ok() -> bool:
            cred = subprocess.run([binaries["munge"], "-n", "-S", str(munge_socket)],
                                  capture_output=True, env=cluster.env)
            return cred.returncode == 0 and cred.stdout.startswith(b"MUNGE:")

        _wait(cluster, "munged", munge_ok, 10)

        _start(cluster, "slurmctld", [binaries["slurmctld"], "-D", "-c", "-i"])
        stack.callback(_cancel_all, cluster)  # runs before the daemons are stopped

        def ctld_ok() -> bool:
            return cluster.run("scontrol", "ping", check=False, timeout=10).stdout.find(
                "is UP") >= 0

        _wait(cluster, "slurmctld", ctld_ok, timeout)
        _start(cluster, "slurmd", [binaries["slurmd"], "-D", "-N", cluster.node])

        def node_idle() -> bool:
            res = cluster.run("sinfo", "-h", "-N", "-n", cluster.node, "-o", "%T",
                              check=False, timeout=10)
            return res.returncode == 0 and res.stdout.strip().rstrip("*~#$@+") == "idle"

        _wait(cluster, f"node {cluster.node} (sinfo state idle)", node_idle, timeout)
        yield cluster


def _cancel_all(cluster: SlurmCluster, timeout: float = 30) -> None:
    """Cancel every job still in the queue and wait for them to leave the node."""
    try:
        cluster.run("scancel", "--partition", cluster.partition, check=False, timeout=10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = cluster.run("squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING,SUSPENDED",
                              "-o", "%i", check=False, timeout=10)
            if res.returncode != 0 or not res.stdout.strip():
                return
            time.sleep(0.5)
    except Exception:  # noqa: BLE001 -- best effort during teardown
        pass
