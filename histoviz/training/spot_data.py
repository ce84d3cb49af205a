"""The data of a spot-level run: spatial samples with their spot features, and their folds.

:func:`load_spot_data` reads the samples of ``data.spots`` (HEST-style spot files), aligns their
genes and embeds the spots' patches that have no feature bag yet (one matrix per sample and
encoder); :func:`spot_folds` makes the held-out groups (one per patient, or per sample). The
spot runner (:mod:`histoviz.training.spots`) fits on them; :func:`histoviz.training.prepare.prepare_spot_run`
calls both before any fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import DataError

if TYPE_CHECKING:
    from histoviz.data.spatial import SpotSample
    from histoviz.training.config import ExperimentConfig

__all__ = ["SpotExperimentData", "load_spot_data", "spot_folds"]

log = logging.getLogger(__name__)


@dataclass
class SpotExperimentData:
    """Loaded spatial samples with their spot features (one matrix per sample and encoder)."""

    samples: list[SpotSample]
    genes: list[str]
    features: dict[str, list[np.ndarray]]
    feature_meta: dict[str, dict[str, Any]]
    encoder: str
    target_sum: float = 1e4
    patch: Any = None
    patch_cache_bytes: int = 512 << 20
    _norm: dict[int, Any] = field(default_factory=dict, repr=False)
    _store: Any = field(default=None, repr=False)

    @property
    def sample_ids(self) -> list[str]:
        """Sample identifiers."""
        return [s.sample_id for s in self.samples]

    def normalized(self, i: int) -> Any:
        """Sample ``i``'s normalised ``log1p`` expression over the shared genes (CSR)."""
        import scipy.sparse as sp

        if i not in self._norm:
            s = self.samples[i]
            idx = pd.Index(s.genes).get_indexer(self.genes)
            lib = s.library()
            scale = np.where(lib > 0, self.target_sum / np.maximum(lib, 1e-12), 0.0)
            x = sp.csr_matrix(s.counts[:, idx], dtype=np.float64)
            x = sp.diags(scale) @ x
            x.data = np.log1p(x.data)
            self._norm[i] = x.astype(np.float32).tocsr()
        return self._norm[i]

    def expression(self, i: int, genes: Sequence[str]) -> np.ndarray:
        """``(n_spots, len(genes))`` dense normalised ``log1p`` expression of sample ``i``."""
        cols = pd.Index(self.genes).get_indexer(list(genes))
        if (cols < 0).any():
            raise DataError(f"genes {[g for g, c in zip(genes, cols) if c < 0][:3]} are not shared by all samples")
        return np.asarray(self.normalized(i)[:, cols].toarray(), np.float32)

    def patches(self, parts: Sequence[tuple[int, np.ndarray]]) -> Any:
        """Spot patches (pixels) of ``[(sample, spot rows), ...]`` for models that train their image
        encoder on them: a :class:`~histoviz.data.spot_patches.SpotPatches` view of one store
        per experiment, read from the slides on demand (``data.spots.patch_cache_mb`` of them
        kept in memory)."""
        if self._store is None:
            from histoviz.data.spatial import PatchSpec
            from histoviz.data.spot_patches import SpotPatchStore

            self._store = SpotPatchStore(self.samples, self.patch or PatchSpec(), cache_bytes=self.patch_cache_bytes)
        return self._store.view(parts)

    def summary(self) -> str:
        """One line for logs."""
        n = sum(len(s) for s in self.samples)
        return (f"{len(self.samples)} samples, {len({s.patient_id for s in self.samples})} patients, {n} spots, "
                f"{len(self.genes)} shared genes, encoders {list(self.features)}")


def load_spot_data(cfg: ExperimentConfig, *, progress: bool = False) -> SpotExperimentData:
    """Read the samples of ``cfg.data.spots``, align their genes, embed missing spot patches.

    Raises
    ------
    DataError
        Bad sample files (see :func:`~histoviz.data.spatial.load_spot_sample`), duplicate sample
        ids, no shared gene, fewer than 2 samples.
    """
    from histoviz.data.spatial import align_genes, load_spot_sample

    spec = cfg.data.spots
    files = spec.sample_files()
    samples = [load_spot_sample(f, patient_key=spec.patient_key, in_tissue_only=spec.in_tissue_only) for f in files]
    seen: dict[str, str] = {}
    for s in samples:
        if s.sample_id in seen:
            raise DataError(f"{s.path}: sample id {s.sample_id!r} is also the id of {seen[s.sample_id]}; ids must be unique")
        seen[s.sample_id] = s.path
    if len(samples) < 2:
        raise DataError(f"{spec.samples[0]}: {len(samples)} spot sample(s); leave-one-out evaluation needs >= 2")
    genes = align_genes(samples)
    encoders = list(dict.fromkeys([spec.encoder, *(cfg.evaluation.spots.encoders if cfg.evaluation.spots else ())]))
    feats: dict[str, list[np.ndarray]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for enc in encoders:
        feats[enc], meta[enc] = _features(spec, samples, enc, main=enc == spec.encoder, progress=progress)
    return SpotExperimentData(samples, genes, feats, meta, spec.encoder, float(spec.target_sum), spec.patch,
                              int(spec.patch_cache_mb) << 20)


def _features(spec: Any, samples: list[SpotSample], encoder: str, *, main: bool,
              progress: bool) -> tuple[list[np.ndarray], dict[str, Any]]:
    import hashlib

    from histoviz.data.spatial import embed_spot_sample
    from histoviz.features.encoders import create_encoder
    from histoviz.io.featurebag import FeatureBag, is_complete_bag

    root = Path(spec.features) / encoder
    enc_obj = None
    out, attrs = [], {}
    for s in samples:
        path = root / f"{s.sample_id}.h5"
        digest = hashlib.sha1("\n".join(s.barcodes).encode()).hexdigest()[:16]
        tile, _, mpp = spec.patch.sizes(s)
        fresh = is_complete_bag(path, encoder=encoder, tile_size=tile, mpp=mpp)
        if fresh:
            bag = FeatureBag.from_h5(path)
            fresh = bag.attrs.get("spots_digest") == digest and len(bag) == len(s)
        if not fresh:
            if enc_obj is None:
                kw: dict[str, Any] = {}
                if main:
                    kw["pretrained"] = spec.pretrained
                    if spec.weights:
                        kw["weights"] = spec.weights
                enc_obj = create_encoder(encoder, **kw)
            path.unlink(missing_ok=True)
            embed_spot_sample(s, enc_obj, path, spec.patch, batch_size=spec.batch_size, device=spec.device,
                              progress=progress)
            import h5py

            with h5py.File(path, "r+") as f:
                f.attrs["spots_digest"] = digest
            bag = FeatureBag.from_h5(path)
        out.append(bag.features)
        if not attrs:
            attrs = dict(bag.attrs)
    return out, attrs


def spot_folds(data: SpotExperimentData, split: str = "auto") -> list[np.ndarray]:
    """Held-out groups of sample indices: one per patient (``patient`` / ``auto``) or per sample.

    Raises
    ------
    DataError
        Fewer than 2 groups.
    """
    if split == "sample":
        groups = list(range(len(data.samples)))
        pats = [s.patient_id for s in data.samples]
        if len(set(pats)) < len(pats):
            log.warning("split: sample holds out one sample at a time although some patients have several "
                        "(the same patient is then in training and test)")
    else:
        order = list(dict.fromkeys(s.patient_id for s in data.samples))
        groups = [order.index(s.patient_id) for s in data.samples]
    g = np.asarray(groups)
    folds = [np.flatnonzero(g == k) for k in range(int(g.max()) + 1)]
    if len(folds) < 2:
        raise DataError(f"all {len(data.samples)} samples belong to one patient; nothing to hold out "
                        "(set evaluation.spots.split: sample to hold out samples instead)")
    return folds
