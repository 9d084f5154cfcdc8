"""The FAISS side of the neighbour search (`evals.neighbours`): finding and loading faiss, the
inner-product index (exact or IVF, CPU or GPU) over a database's normalised rows, and the exact
streaming search that measures an IVF index's recall. Importing it never needs faiss.
"""
from __future__ import annotations

import logging

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
    """The faiss module, or FaissMissing with the install line. Its loader's INFO lines ("Could not
    load library with AVX2 support ... ModuleNotFoundError": a probe for an optional build, not an
    error) are kept out of the job logs; its warnings still show."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
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


