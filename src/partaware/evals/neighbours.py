"""The project's one nearest-neighbour search: cosine similarity (inner product of L2-normalised
rows) by FAISS, for the k-NN task, the neighbour metrics and the retrieval figures.

- `index="flat"` (default): exact `IndexFlatIP`; on a GPU through faiss's GPU index when the
  installed faiss has GPUs (`faiss.get_num_gpus() > 0`), `float16=True` stores the database in
  half precision there (`IndexScalarQuantizer` fp16 on a CPU).
- `index="ivf"`: `IndexIVFFlat` with `nlist` lists probed `nprobe` at a time, for databases too
  large for exact search; its recall@k against exact search on a sample of the queries is
  measured and returned (`Neighbours.recall`), so the log and the rows' notes can say it.

The database is added to the index chunk by chunk (`Chunks`: e.g. a store read in row ranges), so
it is held once, in the index; queries are searched in blocks sized by `memory_mb`. Ties: which
of several rows tied at the k-th place is returned is faiss's choice; on the CPU the tied rows
returned are listed by row (FAISS's GPU kernels list them their own way).
Importing this module never needs faiss: `load_faiss` imports it when a search runs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .faiss_index import (GPU_MAX_K, INSTALL, FaissMissing, _exact_streaming, _Index,  # noqa: F401 (re-exported)
                          faiss_build, faiss_installed, gpu_count, load_faiss, normalised)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSpec:
    """How to search: the `knn` config section's index keys."""

    index: str = "flat"           # flat | ivf
    nlist: int | None = None      # IVF lists; None: 4 sqrt(N)
    nprobe: int = 16
    float16: bool = False         # half-precision database storage
    memory_mb: float = 1024       # per query block: its results and working copies
    recall_sample: int = 1000     # IVF: queries whose exact neighbours measure the recall
    seed: int = 0

    def __post_init__(self):
        if self.index not in ("flat", "ivf"):
            raise ValueError(f"index {self.index!r}: use flat or ivf")


@dataclass(frozen=True)
class Chunks:
    """Rows of a matrix read a range at a time (`read(lo, hi)` -> (hi - lo, dim)), so a store
    never has to be read whole."""

    n_rows: int
    dim: int
    read: Callable[[int, int], np.ndarray]
    rows_per_chunk: int = 65536

    @classmethod
    def of(cls, x) -> "Chunks":
        """An array as chunks (a Chunks as it is)."""
        if isinstance(x, Chunks):
            return x
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"features must be a (rows, dim) matrix, got shape {x.shape}")
        return cls(len(x), x.shape[1], lambda lo, hi: x[lo:hi])

    @classmethod
    def of_store(cls, store, array: str, valid: np.ndarray | None = None, rows_per_chunk: int = 65536) -> "Chunks":
        """The `valid` rows (a bool mask over the store's rows; default all) of a store array, read
        a range at a time with the store's NaN/Inf refusal (`read_checked`)."""
        n = store.n_rows
        valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
        kept = np.flatnonzero(valid)
        dim = int(store.info(array)["shape"][-1])

        def read(lo: int, hi: int) -> np.ndarray:
            span = kept[lo:hi]
            if not len(span):
                return np.zeros((0, dim), np.float32)
            a, b = int(span[0]), int(span[-1]) + 1
            return store.read_checked(array, a, b, valid=valid[a:b])[span - a]

        return cls(len(kept), dim, read, rows_per_chunk)

    def ranges(self, step: int | None = None) -> list[tuple[int, int]]:
        step = max(1, step or self.rows_per_chunk)
        return [(lo, min(lo + step, self.n_rows)) for lo in range(0, self.n_rows, step)]


@dataclass
class Neighbours:
    """The result of a search: (n_queries, k) scores (cosine, float32; -inf where no neighbour)
    and database row ids (int64; -1 where fewer than k exist), what ran and how exact it is."""

    scores: np.ndarray
    ids: np.ndarray
    backend: str
    protocol: str
    recall: float | None = None


def _drop_excluded(scores, ids, exclude, k):
    """Drop one column per row: the excluded id where returned, else the last one (a duplicate of
    the query may outrank it; pytorch-metric-learning's rule), keeping `k` columns."""
    n, width = ids.shape
    drop = ids == np.asarray(exclude)[:, None]
    drop &= np.cumsum(drop, axis=1) == 1
    drop[~drop.any(axis=1), -1] = True
    keep = ~drop
    return scores[keep].reshape(n, width - 1)[:, :k], ids[keep].reshape(n, width - 1)[:, :k]


def _pad(scores, ids, k):
    if ids.shape[1] >= k:
        return scores[:, :k], ids[:, :k]
    pad = ((0, 0), (0, k - ids.shape[1]))
    return np.pad(scores, pad, constant_values=-np.inf), np.pad(ids, pad, constant_values=-1)


def _overlap(exact: np.ndarray, approx: np.ndarray) -> float:
    """Fraction of the exact neighbours (ids >= 0) that the approximate search also returned."""
    hits = total = 0
    for e, a in zip(exact, approx):
        e = set(e[e >= 0].tolist())
        hits += len(e & set(a[a >= 0].tolist()))
        total += len(e)
    return hits / total if total else float("nan")


class NeighbourSearch:
    """Every query's `k` most cosine-similar database rows, searched block by block.

    `database`, `queries`: arrays or `Chunks`. `exclude`: (n_queries,) a database row per query
    to leave out (leave-one-out: the query itself). The index is built on construction
    (`backend` says which faiss build and index); `blocks()` yields (lo, hi, scores (hi-lo, k),
    ids (hi-lo, k)) for query rows [lo, hi); after the last block `protocol` ("exact", or the
    IVF settings and their measured recall) and `recall` are final.
    """

    def __init__(self, database, queries, k: int, *, exclude=None, spec: SearchSpec = SearchSpec()):
        self.faiss = load_faiss()
        self.db, self.q, self.k, self.spec = Chunks.of(database), Chunks.of(queries), int(k), spec
        if self.db.dim != self.q.dim:
            raise ValueError(f"queries have {self.q.dim} dimensions, the database {self.db.dim}")
        if exclude is not None and len(exclude) != self.q.n_rows:
            raise ValueError(f"exclude has {len(exclude)} entries for {self.q.n_rows} queries")
        self.exclude = None if exclude is None else np.asarray(exclude, np.int64)
        self.kk = min(self.k + (exclude is not None), self.db.n_rows)
        self.index = _Index(self.faiss, self.db, spec, self.kk)
        self.backend = self.index.backend
        self.protocol = "exact, float16 storage" if spec.float16 else "exact"
        self.recall = None
        log.info("neighbour search: %s; %d queries, %d database rows of %d dims, k = %d", self.backend,
                 self.q.n_rows, self.db.n_rows, self.db.dim, self.k)

    def blocks(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        q, k, spec = self.q, self.k, self.spec
        per_query = max(1, self.kk) * 4 * (4 + 8) + 3 * 4 * q.dim
        block = int(max(1, min(q.rows_per_chunk, spec.memory_mb * 2**20 // per_query)))
        sample = None
        if spec.index == "ivf":
            sample = np.sort(np.random.default_rng(spec.seed).choice(q.n_rows, min(spec.recall_sample, q.n_rows),
                                                                     replace=False))
            sampled_q, sampled_ids = [], []
        for lo, hi in q.ranges(block):
            xq = normalised(q.read(lo, hi), lo)
            scores, ids = self.index.search(xq, self.kk)
            if self.exclude is not None:
                scores, ids = _drop_excluded(scores, ids, self.exclude[lo:hi], k)
            scores, ids = _pad(scores, ids, k)
            if sample is not None:
                sel = sample[(sample >= lo) & (sample < hi)] - lo
                sampled_q.append(xq[sel])
                sampled_ids.append(ids[sel])
            yield lo, hi, scores, ids
        if sample is not None:
            truth = _exact_streaming(self.faiss, self.db, np.concatenate(sampled_q), self.kk)
            if self.exclude is not None:
                truth = _drop_excluded(np.zeros(truth.shape, np.float32), truth, self.exclude[sample], k)[1]
            self.recall = _overlap(truth[:, :k], np.concatenate(sampled_ids))
            self.protocol = (f"ivf (nlist {self.index.nlist}, nprobe {spec.nprobe}"
                             f"{', float16 storage' if spec.float16 else ''}; recall@{k} {self.recall:.3f} "
                             f"against exact search on {len(sample)} queries)")
            log.info("neighbour search: %s", self.protocol)


def search(database, queries, k: int, *, exclude=None, spec: SearchSpec = SearchSpec()) -> Neighbours:
    """All queries' neighbours at once (see `NeighbourSearch`)."""
    run = NeighbourSearch(database, queries, k, exclude=exclude, spec=spec)
    scores, ids = [np.empty((0, k), np.float32)], [np.empty((0, k), np.int64)]
    for _, _, s, i in run.blocks():
        scores.append(s)
        ids.append(i)
    return Neighbours(np.concatenate(scores), np.concatenate(ids), run.backend, run.protocol, run.recall)
