"""Connected components of an edge list that fits one worker (no Spark).

    labels = min_label_components(u, v, n)    # labels[i] = smallest node number in node i's component

With numba: union-find (the root of a set is always its smallest node; path halving), one pass over the edges.
Without it (udfs.minhash.backend() == "numpy"): min-label propagation with pointer jumping. Every round each edge
pulls both endpoints' labels down to the smaller of the two, then each label is replaced by its own label until
that no longer changes. Labels only decrease and always name a node of the same component, so at the fixed point
(every edge's endpoints agree) each component carries its smallest node number. A round is a few vectorised passes
over the edges; dedup graphs (stars and short chains) settle in a handful of rounds, and pointer jumping keeps
long chains to O(log n) rounds in practice.
"""
from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba is in requirements.txt
    njit = None

if njit is not None:
    @njit(cache=True)
    def _union_find(u, v, n):
        parent = np.arange(n)
        for k in range(u.shape[0]):
            a, b = u[k], v[k]
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            if a < b:
                parent[b] = a
            elif b < a:
                parent[a] = b
        for i in range(n):  # parents are smaller than their children, so one ascending pass finds every root
            parent[i] = parent[parent[i]]
        return parent


def min_label_components(u: np.ndarray, v: np.ndarray, n: int, max_rounds: int = 10_000) -> np.ndarray:
    """Component label of each of n nodes: the smallest node number of its component (u, v: int endpoints)."""
    from udfs.minhash import backend

    u = np.asarray(u, np.int64)
    v = np.asarray(v, np.int64)
    if njit is not None and backend() == "numba":
        return _union_find(u, v, n)
    labels = np.arange(n, dtype=np.int64)
    for _ in range(max_rounds):
        m = np.minimum(labels[u], labels[v])
        before = labels.copy()
        np.minimum.at(labels, u, m)
        np.minimum.at(labels, v, m)
        while True:  # pointer jumping: follow labels to their roots
            nxt = labels[labels]
            if np.array_equal(nxt, labels):
                break
            labels = nxt
        if np.array_equal(labels, before) and np.array_equal(labels[u], labels[v]):
            return labels
    raise RuntimeError(f"connected components did not settle in {max_rounds} rounds")
