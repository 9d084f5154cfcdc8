"""k-NN classification (DINO's weighted vote) and the neighbour metrics of metric learning
(precision@1, R-precision, MAP@R as pytorch-metric-learning's AccuracyCalculator defines them),
from one FAISS search (`neighbours.NeighbourSearch`) of the queries against a database.

- k-NN top-1 (DINO `eval_knn.knn_classifier`): the k most cosine-similar database rows vote for
  their class with weight exp(similarity / T); the class with the largest sum is the prediction.
  A query whose class is absent from the database can never be right: it counts as wrong.
- R = the number of database rows of the query's class (the query itself not counted in
  leave-one-out), capped by `max_r`. precision@1: is the first neighbour of the query's class;
  R-precision: the fraction of the first R neighbours that are; MAP@R: (1/R) sum over i <= R of
  precision@i at each relevant position i. Queries with R = 0 (a class with a single sample in
  leave-one-out, or absent from the database) are left out of these three, as in
  pytorch-metric-learning. With `max_r` below the largest class, R is min(R, max_r) in both the
  cut-off and the denominator (pytorch-metric-learning, given such a k, keeps the uncapped R
  in MAP@R's denominator and warns that its value is then wrong).

Per-query values are returned, so the bootstrap (`bootstrap.accuracy_sums`) gives intervals.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .neighbours import NeighbourSearch, SearchSpec

log = logging.getLogger(__name__)

METRICS = ("precision@1", "R-precision", "MAP@R")


def top1_metric(k: int) -> str:
    """The result-row metric name of the k-NN top-1 at k neighbours."""
    return f"knn_top1@{k}"


@dataclass
class KnnResult:
    """Per-query outcomes of one k-NN evaluation (queries in their given order)."""

    correct: dict[int, np.ndarray]       # k -> (n,) 0/1 of the weighted vote's top-1
    values: dict[str, np.ndarray]        # METRICS -> (n,) per-query value, NaN where R = 0
    r: np.ndarray                        # (n,) R of each query (after max_r)
    missing_classes: list = field(default_factory=list)  # query classes absent from the database
    missing_queries: int = 0             # queries of those classes
    backend: str = ""
    protocol: str = "exact"
    recall: float | None = None

    def summary(self) -> dict[str, float]:
        """Every metric as a fraction: top-1 over all queries, the others over queries with R > 0."""
        out = {top1_metric(k): float(c.mean()) if len(c) else float("nan") for k, c in self.correct.items()}
        for name, v in self.values.items():
            ok = np.isfinite(v)
            out[name] = float(v[ok].mean()) if ok.any() else float("nan")
        return out


def weighted_vote(nb_labels: np.ndarray, nb_scores: np.ndarray, k: int, temperature: float,
                  num_classes: int) -> np.ndarray:
    """(n,) predicted class codes: DINO's vote over the first k neighbours, one-hot(label) x
    exp(similarity / T) summed; ties between classes go to the lower code. Missing neighbours
    (label -1) do not vote."""
    probs = np.zeros((len(nb_labels), num_classes), np.float64)
    rows = np.arange(len(nb_labels))
    weights = np.exp(nb_scores[:, :k].astype(np.float64) / temperature)
    for j in range(min(k, nb_labels.shape[1])):
        lab = nb_labels[:, j]
        ok = lab >= 0
        probs[rows[ok], lab[ok]] += weights[ok, j]
    return probs.argmax(axis=1)


def neighbour_values(nb_labels: np.ndarray, query_labels: np.ndarray, r: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query precision@1, R-precision and MAP@R of ranked neighbour labels (n, >= max r);
    NaN where r = 0."""
    n = len(query_labels)
    width = int(r.max(initial=0))
    rel = nb_labels[:, :max(width, 1)] == query_labels[:, None]
    within = np.arange(1, rel.shape[1] + 1)[None, :] <= r[:, None]
    hits = rel & within
    cum = np.cumsum(hits, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r_f = np.where(r > 0, r, np.nan).astype(np.float64)
        p_at_1 = np.where(r > 0, rel[:, 0], np.nan) if n else np.zeros(0)
        r_precision = hits.sum(axis=1) / r_f
        map_at_r = (cum / np.arange(1, rel.shape[1] + 1) * hits).sum(axis=1) / r_f
    return {"precision@1": p_at_1.astype(np.float64), "R-precision": r_precision, "MAP@R": map_at_r}


def evaluate_knn(database, db_labels, queries, query_labels, ks=(20,), temperature: float = 0.07,
                 max_r: int | None = None, leave_one_out: bool = False,
                 spec: SearchSpec = SearchSpec()) -> KnnResult:
    """k-NN top-1 for each k of `ks` and the neighbour metrics of `queries` against `database`
    (arrays or `neighbours.Chunks`), from one search of max(ks, R) neighbours per query.

    `leave_one_out`: the queries are the database's rows (same order) and each query is left out
    of its own neighbours. A k larger than the database (minus the query) is a ValueError.
    """
    db_labels = np.asarray(db_labels).reshape(-1)
    query_labels = np.asarray(query_labels).reshape(-1)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"knn.k: {ks} - give at least one k >= 1")
    if leave_one_out and len(query_labels) != len(db_labels):
        raise ValueError("leave-one-out needs the queries to be the database's rows")
    size = len(db_labels) - int(leave_one_out)
    if ks[-1] > size:
        raise ValueError(f"knn.k: {ks[-1]} neighbours, but the database holds {size} rows"
                         f"{' besides the query' if leave_one_out else ''}; use k <= {size}")
    classes, db_codes = np.unique(db_labels, return_inverse=True)
    db_codes = db_codes.reshape(-1)
    counts = np.bincount(db_codes, minlength=len(classes))
    pos = np.searchsorted(classes, query_labels)
    present = (pos < len(classes)) & (classes[np.minimum(pos, len(classes) - 1)] == query_labels)
    q_codes = np.where(present, np.minimum(pos, len(classes) - 1), -1)
    r = np.where(present, counts[np.maximum(q_codes, 0)] - int(leave_one_out), 0)
    if max_r is not None:
        r = np.minimum(r, int(max_r))
    missing = sorted(set(query_labels[~present].tolist()))
    if missing:
        log.warning("k-NN: %d queries of %d classes absent from the database (%s%s): counted wrong in the k-NN "
                    "top-1, left out of precision@1, R-precision and MAP@R", int((~present).sum()), len(missing),
                    ", ".join(map(str, missing[:10])), ", ..." if len(missing) > 10 else "")
    k_search = max(ks[-1], int(r.max(initial=0)))
    run = NeighbourSearch(database, queries, k_search, spec=spec,
                          exclude=np.arange(len(query_labels)) if leave_one_out else None)
    correct = {k: np.zeros(len(query_labels), np.int8) for k in ks}
    values = {m: np.full(len(query_labels), np.nan) for m in METRICS}
    for lo, hi, scores, ids in run.blocks():
        nb = np.where(ids >= 0, db_codes[np.maximum(ids, 0)], -1)
        for k in ks:
            correct[k][lo:hi] = weighted_vote(nb, scores, k, temperature, len(classes)) == q_codes[lo:hi]
        for m, v in neighbour_values(nb, q_codes[lo:hi], r[lo:hi]).items():
            values[m][lo:hi] = v
    return KnnResult(correct, values, r, missing, int((~present).sum()), run.backend, run.protocol, run.recall)
