"""Top-k retrieval of training spots: chunked similarity + ``topk`` on the model's device.

CMRCNet, BLEEP and the kNN baseline predict a spot as the (unweighted) mean expression of its
``k`` most similar training spots. The similarity matrix of all queries against ``M`` training
spots never exists at once: queries go in chunks sized so one chunk's scores stay within
``max_bytes``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["topk_indices", "topk_mean"]


def _tensor(x: Any, dev: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(dev)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev)


def topk_indices(query: Any, keys: Any, k: int, *, metric: str = "cosine", device: Any = "cpu",
                 max_bytes: int = 64 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` most similar keys for each query.

    Parameters
    ----------
    query, keys
        ``(n, d)`` and ``(M, d)`` arrays or tensors.
    k
        Neighbours (capped at ``M``).
    metric
        ``"cosine"`` (both sides L2-normalised, then dot products), ``"dot"`` or
        ``"euclidean"`` (scores are negative squared distances).
    device
        Torch device of the search.
    max_bytes
        Size of one chunk of scores.

    Returns
    -------
    ``(n, k)`` int64 indices (best first) and ``(n, k)`` float32 scores.
    """
    import torch

    dev = torch.device(device)
    q, kk = _tensor(query, dev), _tensor(keys, dev)
    if metric == "cosine":
        q = torch.nn.functional.normalize(q, dim=1)
        kk = torch.nn.functional.normalize(kk, dim=1)
    elif metric not in ("dot", "euclidean"):
        raise ValueError(f"metric must be cosine, dot or euclidean, got {metric!r}")
    m = kk.shape[0]
    k = max(1, min(int(k), m))
    chunk = max(1, int(max_bytes) // (4 * max(m, 1)))
    kn = (kk * kk).sum(1) if metric == "euclidean" else None
    idx_out, sc_out = [], []
    with torch.no_grad():
        for s in range(0, q.shape[0], chunk):
            qc = q[s:s + chunk]
            sc = qc @ kk.T
            if kn is not None:
                sc = 2 * sc - kn[None, :] - (qc * qc).sum(1, keepdim=True)
            v, i = torch.topk(sc, k, dim=1)
            idx_out.append(i.cpu())
            sc_out.append(v.float().cpu())
    if not idx_out:
        return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
    return torch.cat(idx_out).numpy().astype(np.int64), torch.cat(sc_out).numpy()


def topk_mean(query: Any, keys: Any, values: Any, k: int, *, metric: str = "cosine", device: Any = "cpu",
              max_bytes: int = 64 << 20) -> np.ndarray:
    """Mean of ``values`` (``(M, m)``) over each query's ``k`` most similar keys: ``(n, m)``."""
    import torch

    dev = torch.device(device)
    idx, _ = topk_indices(query, keys, k, metric=metric, device=dev, max_bytes=max_bytes)
    vals = _tensor(values, dev)
    out = []
    step = max(1, int(max_bytes) // (4 * max(1, idx.shape[1] * vals.shape[1])))
    with torch.no_grad():
        for s in range(0, len(idx), step):
            ii = torch.from_numpy(idx[s:s + step]).to(dev)
            out.append(vals[ii].mean(dim=1).cpu())
    if not out:
        return np.zeros((0, vals.shape[1]), np.float32)
    return torch.cat(out).numpy()
