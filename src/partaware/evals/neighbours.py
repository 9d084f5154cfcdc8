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

log = logging.getLogger(__name__)

# the extras' names both ways: from an index (partaware[cpu]) and in a clone (.[cpu])
INSTALL = ("pip install 'partaware[cpu]' (in a clone: pip install '.[cpu]'; or just pip install faiss-cpu); a CUDA "
           "machine: 'partaware[gpu]' / '.[gpu]', or conda install -c pytorch faiss-gpu (the code uses whichever "
           "is importable)")
GPU_MAX_K = 2048        # faiss GPU k-selection limit (neighbours per query, and IVF nprobe)
_TRAIN_PER_LIST = 64    # IVF training rows per list (faiss wants at least 39)


class FaissMissing(ImportError):
    """faiss is not importable; the message carries the install line."""


def faiss_installed() -> bool:
    """Whether faiss can be imported, without importing it (a config check stays fast and quiet)."""
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


def load_faiss():
    """The faiss module, or FaissMissing with the install line."""
    try:
        import faiss
    except ImportError as err:
        raise FaissMissing(f"the neighbour search needs faiss, which is not importable ({err}); {INSTALL}") from err
    return faiss


def gpu_count(faiss) -> int:
    """GPUs the installed faiss can use (0 for a CPU build)."""
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def faiss_build() -> str:
    """Which faiss is installed, e.g. `faiss 1.15.1 (CPU build)` or `faiss 1.9.0 (GPU build, 1 GPU)`."""
    faiss = load_faiss()
    gpus = gpu_count(faiss)
    kind = f"GPU build, {gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "CPU build"
    return f"faiss {faiss.__version__} ({kind})"


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


def normalised(x: np.ndarray, first_row: int = 0) -> np.ndarray:
    """L2-normalised float32 rows (a zero row stays zero); NaN/Inf rows are refused, as in every
    evaluation (`first_row` numbers them in the error)."""
    x = np.asarray(x, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        rows = ", ".join(str(int(r) + first_row) for r in bad[:5])
        raise ValueError(f"features hold NaN or Inf in {len(bad)} row(s) (first: {rows}); they cannot be searched "
                         "(a lost store chunk or an encoder overflow): delete the store and rerun")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


# --------------------------------------------------------------------------------- the index
class _Index:
    """A FAISS inner-product index over a database's normalised rows, searched in query blocks."""

    def __init__(self, faiss, db: Chunks, spec: SearchSpec, k: int):
        self.faiss, self.db, self.spec = faiss, db, spec
        gpus = gpu_count(faiss)
        self.gpu = bool(gpus) and k <= GPU_MAX_K and (spec.index == "flat" or spec.nprobe <= GPU_MAX_K)
        if gpus and not self.gpu:
            log.info("faiss: %d neighbours per query exceed the GPU's limit of %d; searching on the CPU", k, GPU_MAX_K)
        d = db.dim
        if spec.index == "flat":
            self.index = self._flat(d)
            self.nlist = None
        else:
            self.nlist = int(spec.nlist or max(1, round(4 * np.sqrt(db.n_rows))))
            if self.nlist > db.n_rows:
                raise ValueError(f"nlist {self.nlist} is larger than the database ({db.n_rows} rows); use fewer lists")
            self.index = self._ivf(d)
            self._train()
            self.index.nprobe = spec.nprobe
        for lo, hi in db.ranges():
            self.index.add(normalised(db.read(lo, hi), lo))
        kind = type(self.index).__name__
        self.backend = f"{faiss_build()}: {kind} on the {'GPU' if self.gpu else 'CPU'}"
        if spec.float16:
            self.backend += ", float16 storage"

    def _flat(self, d: int):
        f = self.faiss
        if self.gpu:
            cfg = f.GpuIndexFlatConfig()
            cfg.useFloat16 = self.spec.float16
            self._res = f.StandardGpuResources()
            return f.GpuIndexFlatIP(self._res, d, cfg)
        if self.spec.float16:
            return f.IndexScalarQuantizer(d, f.ScalarQuantizer.QT_fp16, f.METRIC_INNER_PRODUCT)
        return f.IndexFlatIP(d)

    def _ivf(self, d: int):
        f = self.faiss
        self._quantizer = f.IndexFlatIP(d)
        if self.spec.float16:
            index = f.IndexIVFScalarQuantizer(self._quantizer, d, self.nlist, f.ScalarQuantizer.QT_fp16,
                                              f.METRIC_INNER_PRODUCT)
        else:
            index = f.IndexIVFFlat(self._quantizer, d, self.nlist, f.METRIC_INNER_PRODUCT)
        index.cp.seed = self.spec.seed
        if self.gpu:
            self._res = f.StandardGpuResources()
            index = f.index_cpu_to_gpu(self._res, 0, index)
        return index

    def _train(self) -> None:
        """Train the IVF lists on a seeded sample of the database (read chunk by chunk)."""
        n = self.db.n_rows
        size = min(n, _TRAIN_PER_LIST * self.nlist)
        pick = np.sort(np.random.default_rng(self.spec.seed).choice(n, size, replace=False))
        parts = []
        for lo, hi in self.db.ranges():
            sel = pick[(pick >= lo) & (pick < hi)]
            if len(sel):
                parts.append(normalised(self.db.read(lo, hi)[sel - lo], lo))
        self.index.train(np.concatenate(parts))

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, database rows) of normalised queries; -inf / -1 where no neighbour."""
        scores, ids = self.index.search(xq, k)
        ids = ids.astype(np.int64)
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        if not self.gpu:  # faiss lists tied rows by descending id: list them by row
            order = np.lexsort((np.where(ids >= 0, ids, np.iinfo(np.int64).max), -scores), axis=1)
            scores, ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        return scores, ids


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


def _exact_streaming(faiss, db: Chunks, xq: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k database rows of a few normalised queries, one database chunk in memory at a
    time (ties to the lower row). The ground truth of the IVF recall."""
    best_s = np.full((len(xq), 0), -np.inf, np.float32)
    best_i = np.full((len(xq), 0), -1, np.int64)
    for lo, hi in db.ranges():
        part = faiss.IndexFlatIP(db.dim)
        part.add(normalised(db.read(lo, hi), lo))
        s, i = part.search(xq, min(k, hi - lo))
        s = np.concatenate([best_s, s], axis=1)
        i = np.concatenate([best_i, i.astype(np.int64) + lo], axis=1)
        order = np.lexsort((i, -s), axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i


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
