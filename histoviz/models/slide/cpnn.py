"""CPNN: cell-type prototype-informed expression prediction.

After Nishimura et al., "Cell-Type Prototype-Informed Neural Network for Gene Expression
Estimation from Pathology Images" (digest: ``../shared/papers/digest-cpnn.md``):

- prototypes ``T0`` (cell types x genes) = mean expression per cell type of an scRNA
  reference (``obs[label_key]``), each row normalised to sum to 1 (the paper's "average
  prototype" variant; the cell2location regression that corrects batch effects is not used);
- per-patch composition weights ``w_i = softmax(MLP(x_i))`` (two linear layers with GELU);
- slide expression ``mu = alpha * (mean_i w_i) @ T + beta``, normalised over genes and
  multiplied by the library size (Eq. 1-2); ``T = softmax_genes(log T)`` is refined during
  training; ``alpha``, ``beta`` (the modality correction) and the NB dispersion ``theta``
  are learned, all positive through log parameters;
- loss: negative-binomial NLL on counts (Eq. 9-11) or MSE in target space (``loss="mse"``),
  plus ``lambda_proto * ||T0 - T||^2`` (Eq. 8, keeps prototypes interpretable) and
  optionally ``lambda_prop * mean((mean_i w_i - W)^2)`` towards a non-negative least-squares
  deconvolution ``W`` of each **training** bulk profile on ``T0`` (the paper uses
  cell2location; NNLS is our CPU stand-in).

Ablation switches (paper Table 4): ``prototypes="refine"`` (ours), ``"frozen"`` (w/o U, R),
``"scratch"`` (random init, no prototype penalty: "like MOSBY"); ``modality_correction=False``
fixes ``alpha = 1, beta = 0`` (w/o MC).

At prediction time the library size is unknown; predictions are expression fractions, put
into the target space (e.g. ``log10(1 + CP10k)``) with the modality's
:class:`~histoviz.data.omics.OutputTransform`. Genes missing from the reference are not
predicted. ``cell_type_weights`` are the paper's ``w_i``: shares of each cell type's
*normalised* prototype in the patch's expression (not cell counts).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.base import PatchMaps
from histoviz.models.registry import register_model

if TYPE_CHECKING:
    import anndata as ad

    from histoviz.data.targets import TargetBlock

__all__ = ["CPNNRegressor", "build_prototypes", "load_reference", "nnls_proportions", "prototype_table"]

log = logging.getLogger(__name__)


def load_reference(reference: str | ad.AnnData) -> ad.AnnData:
    """An scRNA reference: a ``.h5ad`` path, ``"scanpy:pbmc68k_reduced"`` or an AnnData."""
    import anndata as ad

    if isinstance(reference, ad.AnnData):
        return reference
    ref = str(reference)
    if ref.startswith("scanpy:"):
        import scanpy as sc

        name = ref.split(":", 1)[1]
        if name != "pbmc68k_reduced":
            raise ConfigError(f"reference {ref!r}: only scanpy:pbmc68k_reduced is bundled offline")
        return sc.datasets.pbmc68k_reduced()
    from pathlib import Path

    if not Path(ref).exists():
        raise DataError(f"{ref}: scRNA reference not found")
    return ad.read_h5ad(ref)


def build_prototypes(
    reference: ad.AnnData,
    genes: Sequence[str] | None = None,
    *,
    label_key: str = "cell_type",
    layer: str | None = None,
    use_raw: bool = False,
    log1p_input: bool = False,
    min_cells: int = 3,
) -> pd.DataFrame:
    """Mean expression profile per cell type, each row normalised to sum to 1.

    Each cell is first scaled to the same total over the selected genes (removing sequencing
    depth), then cells are averaged per type.

    Parameters
    ----------
    reference
        Cells x genes with ``obs[label_key]``.
    genes
        Genes to keep (order kept; genes absent from the reference are skipped).
    label_key
        Cell-type column (``"bulk_labels"`` for ``pbmc68k_reduced``).
    layer, use_raw
        Where the expression is (``layers[layer]``, ``.raw`` or ``X``).
    log1p_input
        The values are ``log1p`` of normalised counts (``pbmc68k_reduced.raw``): undo with
        ``expm1`` first.
    min_cells
        Cell types with fewer cells are dropped.

    Returns
    -------
    DataFrame cell types x genes (rows sum to 1).

    Raises
    ------
    DataError
        Missing label column, negative values, too few shared genes or cell types.
    """
    import scipy.sparse as sp

    if label_key not in reference.obs:
        raise DataError(f"scRNA reference has no obs[{label_key!r}]; columns: {list(reference.obs.columns)}")
    if use_raw:
        if reference.raw is None:
            raise DataError("scRNA reference has no .raw")
        x, var_names = reference.raw.X, reference.raw.var_names
    elif layer is not None:
        if layer not in reference.layers:
            raise DataError(f"scRNA reference has no layer {layer!r}")
        x, var_names = reference.layers[layer], reference.var_names
    else:
        x, var_names = reference.X, reference.var_names
    var_names = pd.Index(var_names.astype(str))
    if genes is None:
        cols = np.arange(len(var_names))
    else:
        pos = var_names.get_indexer([str(g) for g in genes])
        cols = pos[pos >= 0]
    if len(cols) < 2:
        raise DataError(
            f"scRNA reference shares {len(cols)} gene(s) with the targets (e.g. targets {list(genes or [])[:3]}, "
            f"reference {list(var_names[:3])}); gene names must match"
        )
    x = x[:, cols]
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    x = np.asarray(x, dtype=np.float64)
    if log1p_input:
        x = np.expm1(x)
    if (x < 0).any():
        raise DataError("scRNA reference has negative values (scaled data?); use counts, a layer or use_raw")
    tot = x.sum(axis=1, keepdims=True)
    x = np.where(tot > 0, x / np.maximum(tot, 1e-12), 0.0)
    labels = reference.obs[label_key].astype(str).to_numpy()
    types, counts = np.unique(labels, return_counts=True)
    types = types[counts >= min_cells]
    if len(types) < 2:
        raise DataError(f"scRNA reference needs >= 2 cell types with >= {min_cells} cells in obs[{label_key!r}]")
    proto = np.stack([x[labels == t].mean(axis=0) for t in types])
    proto = proto / np.maximum(proto.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(proto, index=pd.Index(types, name="cell_type"), columns=var_names[cols])


def prototype_table(path: str | os.PathLike, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """Prototypes from a table (cell types x genes, e.g. cell2location's per-type means).

    Parameters
    ----------
    path
        CSV/TSV/parquet with cell types as the first column (index) and genes as columns.
    genes
        Genes to keep (order kept; absent ones skipped).

    Returns
    -------
    DataFrame cell types x genes, rows normalised to sum to 1.

    Raises
    ------
    DataError
        Missing file, negative values, fewer than 2 cell types or shared genes.
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: prototype table not found")
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        df = pd.read_csv(p, sep="\t" if p.suffix == ".tsv" else ",", index_col=0)
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    if genes is not None:
        df = df[[g for g in map(str, genes) if g in df.columns]]
    x = df.to_numpy(np.float64)
    if df.shape[0] < 2 or df.shape[1] < 2:
        raise DataError(f"{p}: need >= 2 cell types and >= 2 genes shared with the targets, got {df.shape}")
    if not np.isfinite(x).all() or (x < 0).any():
        raise DataError(f"{p}: prototypes must be finite and non-negative")
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
    return pd.DataFrame(x, index=pd.Index(df.index, name="cell_type"), columns=df.columns)


def nnls_proportions(bulk_fractions: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Non-negative least-squares deconvolution of each bulk profile on the prototypes.

    Parameters
    ----------
    bulk_fractions
        ``(n, G)`` expression fractions (rows sum to 1).
    prototypes
        ``(C, G)`` normalised prototypes.

    Returns
    -------
    ``(n, C)`` proportions (rows sum to 1; uniform where the fit is all zero).
    """
    from scipy.optimize import nnls

    a = np.asarray(prototypes, np.float64).T
    out = np.empty((len(bulk_fractions), a.shape[1]))
    for i, b in enumerate(np.asarray(bulk_fractions, np.float64)):
        w, _ = nnls(a, b)
        s = w.sum()
        out[i] = w / s if s > 0 else 1.0 / a.shape[1]
    return out


def _net(arch: Mapping[str, Any], proto_init: np.ndarray | None = None) -> Any:
    import torch
    from torch import nn

    class CPNNNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c, g = arch["n_types"], arch["n_genes"]
            h = arch["hidden"]
            self.weight_mlp = nn.Sequential(
                nn.Linear(arch["in_dim"], h), nn.GELU(), nn.Dropout(arch["dropout"]), nn.Linear(h, c)
            )
            init = torch.zeros(c, g) if proto_init is None else torch.from_numpy(np.log(np.maximum(proto_init, 1e-12))).float()
            self.register_buffer("log_proto_init", init.clone())
            if arch["prototypes"] == "frozen":
                self.register_buffer("log_proto", init.clone())
            else:
                self.log_proto = nn.Parameter(init.clone())
            if arch["modality_correction"]:
                self.log_alpha = nn.Parameter(torch.zeros(g))
                self.log_beta = nn.Parameter(torch.full((g,), -12.0))
            else:
                self.register_buffer("log_alpha", torch.zeros(g))
                self.register_buffer("log_beta", torch.full((g,), -float("inf")))
            self.log_theta = nn.Parameter(torch.zeros(g))

        def prototypes(self) -> torch.Tensor:
            return torch.softmax(self.log_proto, dim=1)

        def prototypes_init(self) -> torch.Tensor:
            return torch.softmax(self.log_proto_init, dim=1)

        def patch_weights(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.weight_mlp(x), dim=-1)

        def mix(self, w: torch.Tensor) -> torch.Tensor:
            """Weights ``(..., C)`` -> expression fractions ``(..., G)`` (rows sum to 1)."""
            mu = torch.exp(self.log_alpha) * (w @ self.prototypes()) + torch.exp(self.log_beta)
            return mu / mu.sum(dim=-1, keepdim=True)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            w = self.patch_weights(x)  # (B, N, C)
            m = mask.float().unsqueeze(-1)
            wbar = (w * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.mix(wbar), wbar, w

    return CPNNNet()


@register_model("cpnn", needs_reference=True, regression_blocks=1, outputs=("cell_type",), description="cell-type prototypes x per-patch composition weights")
class CPNNRegressor(TorchSlideModel):
    """Gene expression through cell-type prototypes and image-derived composition weights.

    Parameters
    ----------
    reference
        scRNA reference: ``.h5ad`` path or ``"scanpy:pbmc68k_reduced"``; or a prototype
        table (``.csv``/``.tsv``/``.parquet``, cell types x genes; see :func:`prototype_table`).
    label_key, reference_layer, reference_use_raw, reference_log1p
        Where the reference keeps labels and expression (see :func:`build_prototypes`).
    modality
        Target modality (counts, ``normalize: total``).
    hidden, dropout
        Weight MLP (two linear layers, GELU).
    loss
        ``"nb"`` (negative binomial on counts, the paper) or ``"mse"`` (in target space).
    prototypes
        ``"refine"``, ``"frozen"`` or ``"scratch"`` (ablations).
    modality_correction
        Learn ``alpha``, ``beta`` (``False``: ``alpha = 1``, ``beta = 0``).
    lambda_proto
        Weight of ``||T0 - T||^2`` (paper: 1e3; ignored for ``scratch``).
    lambda_prop
        Weight of the slide-composition consistency term against NNLS deconvolution of
        training bulk (0: off).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`; paper: AdamW, lr 1e-3;
        defaults here: 200 epochs, patience 20, gradient clip 0.5).
    """

    loop_defaults = {"epochs": 200, "patience": 20, "grad_clip": 0.5}

    supported_modalities = None

    def __init__(
        self,
        *,
        reference: str = "",
        label_key: str = "cell_type",
        reference_layer: str | None = None,
        reference_use_raw: bool = False,
        reference_log1p: bool = False,
        modality: str = "gene",
        hidden: int = 256,
        dropout: float = 0.1,
        loss: str = "nb",
        prototypes: str = "refine",
        modality_correction: bool = True,
        lambda_proto: float = 1e3,
        lambda_prop: float = 0.0,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        if loss not in ("nb", "mse"):
            raise ConfigError(f"loss must be 'nb' or 'mse', got {loss!r}")
        if prototypes not in ("refine", "frozen", "scratch"):
            raise ConfigError(f"prototypes must be refine, frozen or scratch, got {prototypes!r}")
        self.reference = reference
        self.label_key = label_key
        self.reference_layer = reference_layer
        self.reference_use_raw = reference_use_raw
        self.reference_log1p = reference_log1p
        self.modality = modality
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.prototypes = prototypes
        self.modality_correction = modality_correction
        self.lambda_proto = lambda_proto
        self.lambda_prop = lambda_prop

    _make_net = staticmethod(lambda arch: _net(arch))

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        from histoviz.data.targets import OutputTransform

        super()._load_state(meta, arrays)
        self.cell_types_ = list(meta["cell_types"])
        self.genes_ = list(meta["genes"])
        self.gene_index_ = np.asarray(arrays["gene_index"], np.int64)
        self.library_ratio_ = float(meta["library_ratio"])
        out_arrays = {k[len("output."):]: v for k, v in arrays.items() if k.startswith("output.")}
        self.output_ = OutputTransform.from_state(meta["output"], out_arrays) if meta.get("output") else None

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._state()
        meta.update({"cell_types": self.cell_types_, "genes": self.genes_, "library_ratio": self.library_ratio_})
        arrays["gene_index"] = self.gene_index_
        if self.output_ is not None:
            om, oa = self.output_.to_state()
            meta["output"] = om
            arrays.update({f"output.{k}": v for k, v in oa.items()})
        return meta, arrays

    # -- fit -------------------------------------------------------------------------------------
    def _fit(self, bags: Sequence[np.ndarray], targets: Mapping[str, TargetBlock], val: Any) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module
        from histoviz.nn.losses import nb_nll

        if self.modality not in targets:
            raise DataError(f"CPNN predicts {self.modality!r} but the targets are {list(targets)}")
        extra = sorted(set(targets) - {self.modality})
        if extra:
            log.info("CPNN ignores target modalities %s", extra)
        blk = targets[self.modality]
        if self.loss == "nb" and (blk.counts is None or blk.library is None):
            raise DataError(
                f"CPNN with loss='nb' needs raw counts for {self.modality!r}: set normalize: total for it"
            )
        if blk.output is None:
            raise DataError(f"CPNN needs {self.modality!r} with normalize: total (its targets are fractions)")
        if not self.reference:
            raise ConfigError("CPNN needs reference= (an scRNA .h5ad with cell-type labels)")
        seed_everything(self.loop.seed)
        dev = self._device()
        if str(self.reference).endswith((".csv", ".tsv", ".parquet")):
            proto = prototype_table(self.reference, blk.targets)
        else:
            proto = build_prototypes(
                load_reference(self.reference), blk.targets, label_key=self.label_key,
                layer=self.reference_layer, use_raw=self.reference_use_raw, log1p_input=self.reference_log1p,
            )
        genes = list(proto.columns)
        gidx = pd.Index(blk.targets).get_indexer(genes)
        self.genes_, self.gene_index_ = genes, gidx.astype(np.int64)
        self.cell_types_ = [str(c) for c in proto.index]
        self.targets_ = {self.modality: genes}
        self.modalities_ = [self.modality]
        self.output_ = blk.output
        t0 = proto.to_numpy()
        if len(genes) < len(blk.targets):
            log.info("CPNN: %d of %d %s targets are in the reference", len(genes), len(blk.targets), self.modality)

        rows = np.flatnonzero(blk.present)
        if self.loss == "nb":
            counts = np.nan_to_num(blk.counts[:, gidx])
            lib_sub = counts.sum(axis=1)
            ratio = lib_sub[rows] / np.maximum(blk.library[rows], 1e-12)
            self.library_ratio_ = float(np.mean(ratio))
            frac = counts / np.maximum(lib_sub[:, None], 1e-12)
        else:
            counts = None
            self.library_ratio_ = 1.0
            if blk.counts is not None and blk.library is not None:
                c = np.nan_to_num(blk.counts[:, gidx])
                self.library_ratio_ = float(np.mean(c[rows].sum(1) / np.maximum(blk.library[rows], 1e-12)))
                frac = c / np.maximum(c.sum(1, keepdims=True), 1e-12)
            else:
                frac = None

        self.feature_mean_, self.feature_std_ = feature_stats(bags)
        self.arch_ = {
            "in_dim": self.embed_dim_, "n_types": len(self.cell_types_), "n_genes": len(genes),
            "hidden": self.hidden, "dropout": self.dropout, "prototypes": self.prototypes,
            "modality_correction": bool(self.modality_correction),
        }
        if self.prototypes == "scratch":
            rng = np.random.default_rng(self.loop.seed)
            init = np.exp(rng.normal(0.0, 1.0, t0.shape)) * t0.mean(axis=0, keepdims=True)
            init /= init.sum(axis=1, keepdims=True)
        else:
            init = t0
        net = _net(self.arch_, init)
        with torch.no_grad():
            if self.modality_correction and frac is not None:
                # alpha starts where uniform weights reproduce the mean training profile
                mean_frac = frac[rows].mean(axis=0)
                base = init.mean(axis=0)
                a0 = np.log(np.maximum(mean_frac, 1e-12) / np.maximum(base, 1e-12))
                net.log_alpha.copy_(torch.from_numpy(a0 - a0.mean()).float())
                net.log_beta.fill_(float(np.log(1e-3 / len(genes))))
        net.to(dev)
        self.module_ = net

        prop = None
        if self.lambda_prop > 0:
            if frac is None:
                raise DataError("lambda_prop needs counts (normalize: total) for the deconvolution targets")
            prop_np = np.full((len(frac), len(self.cell_types_)), np.nan)
            prop_np[rows] = nnls_proportions(frac[rows], t0)
            prop = torch.from_numpy(np.nan_to_num(prop_np)).float().to(dev)

        pres = torch.from_numpy(blk.present).to(dev)
        y_proc = torch.from_numpy(np.nan_to_num(blk.values[:, gidx])).float().to(dev)
        y_counts = None if counts is None else torch.from_numpy(counts).float().to(dev)
        tr = self._batcher(bags, train=True)
        lam_proto = 0.0 if self.prototypes in ("scratch", "frozen") else float(self.lambda_proto)
        out_t = self._torch_output(dev)

        def data_loss(fr: torch.Tensor, ti: torch.Tensor, yc: Any, yp: torch.Tensor, pp: torch.Tensor) -> torch.Tensor:
            m = pp[ti]
            if not bool(m.any()):
                return fr.sum() * 0.0
            fr, ti = fr[m], ti[m]
            if self.loss == "nb":
                c = yc[ti]
                mu = fr * c.sum(1, keepdim=True)
                return nb_nll(c, mu, torch.exp(net.log_theta)) * m.float().mean()
            pred = out_t(fr * (self.output_.target_sum * self.library_ratio_))
            return ((pred - yp[ti]) ** 2).mean(1).sum() / len(m)

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
            x, mask = tr.batch(idx, rng)
            fr, wbar, _ = net(x, mask)
            ti = torch.from_numpy(idx).to(dev)
            loss = data_loss(fr, ti, y_counts, y_proc, pres)
            if lam_proto:
                loss = loss + lam_proto * ((net.prototypes() - net.prototypes_init()) ** 2).sum()
            if prop is not None:
                m = pres[ti]
                if bool(m.any()):
                    loss = loss + float(self.lambda_prop) * ((wbar[m] - prop[ti][m]) ** 2).mean()
            return loss, {}

        validate = None
        if val is not None:
            vblk = val[1][self.modality]
            vb = self._batcher(val[0], train=False)
            vpres = torch.from_numpy(vblk.present).to(dev)
            vy = torch.from_numpy(np.nan_to_num(vblk.values[:, gidx])).float().to(dev)
            vc = None
            if self.loss == "nb":
                vc = torch.from_numpy(np.nan_to_num(vblk.counts[:, gidx])).float().to(dev)
            n_val = len(val[0])

            def validate() -> dict[str, float]:
                tot = 0.0
                for s in range(0, n_val, max(1, self.loop.batch_size)):
                    idx = np.arange(s, min(s + self.loop.batch_size, n_val))
                    x, mask = vb.batch(idx)
                    fr, _, _ = net(x, mask)
                    tot += float(data_loss(fr, torch.from_numpy(idx).to(dev), vc, vy, vpres)) * len(idx)
                return {"total": tot / n_val}

        self.fit_info_ = train_module(net, len(bags), step, settings=self.loop, validate=validate, desc="cpnn")

    def _torch_output(self, dev: Any) -> Any:
        import torch

        o = self.output_
        mean = None if o.mean is None else torch.from_numpy(np.asarray(o.mean)[self.gene_index_]).float().to(dev)
        std = None if o.std is None else torch.from_numpy(np.asarray(o.std)[self.gene_index_]).float().to(dev)

        def f(normalized: torch.Tensor) -> torch.Tensor:
            x = normalized.clamp(min=0.0)
            if o.transform == "log10p1":
                y = torch.log10(1.0 + x)
            elif o.transform == "log1p":
                y = torch.log1p(x)
            elif o.transform == "log2p1":
                y = torch.log2(1.0 + x)
            else:
                y = x
            if mean is not None:
                y = (y - mean) / std
            return y

        return f

    # -- predict ---------------------------------------------------------------------------------
    def _to_target_space(self, frac: np.ndarray) -> np.ndarray:
        norm = frac * (self.output_.target_sum * self.library_ratio_)
        return self.output_.apply(norm, columns=self.gene_index_)

    def _predict(self, bags: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        b = self._batcher(bags, train=False)
        fr_all = []
        with torch.no_grad():
            for s in range(0, len(bags), max(1, self.loop.batch_size)):
                idx = np.arange(s, min(s + self.loop.batch_size, len(bags)))
                x, mask = b.batch(idx)
                fr, _, _ = self.module_(x, mask)
                fr_all.append(fr.cpu().numpy().astype(np.float64))
        return {self.modality: self._to_target_space(np.concatenate(fr_all))}

    def predict_composition(self, bags: Sequence[np.ndarray]) -> pd.DataFrame:
        """Slide-level weights ``mean_i w_i`` (bags x cell types)."""
        import torch

        self._check_fitted()
        b = self._batcher(bags, train=False)
        out = []
        with torch.no_grad():
            for i in range(len(bags)):
                x, mask = b.batch([i])
                _, wbar, _ = self.module_(x, mask)
                out.append(wbar[0].cpu().numpy())
        return pd.DataFrame(np.stack(out), columns=self.cell_types_)

    def prototype_table(self, *, initial: bool = False) -> pd.DataFrame:
        """Current (refined) or initial normalised prototypes, cell types x genes."""
        import torch

        self._check_fitted()
        with torch.no_grad():
            t = self.module_.prototypes_init() if initial else self.module_.prototypes()
        return pd.DataFrame(t.cpu().numpy(), index=self.cell_types_, columns=self.genes_)

    def _predict_patches(self, bag: np.ndarray) -> PatchMaps:
        import torch

        b = self._batcher([bag], train=False)
        x, mask = b.batch([0])
        with torch.no_grad():
            fr, _, w = self.module_(x, mask)
            patch_fr = self.module_.mix(w[0])
        weights = pd.DataFrame(w[0].cpu().numpy().astype(np.float64), columns=self.cell_types_)
        return PatchMaps(
            patch={self.modality: self._to_target_space(patch_fr.cpu().numpy().astype(np.float64))},
            targets={self.modality: self.genes_},
            slide={self.modality: self._to_target_space(fr.cpu().numpy().astype(np.float64))[0]},
            extra={"cell_type": weights},
        )
