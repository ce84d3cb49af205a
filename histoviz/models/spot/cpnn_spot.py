"""CPNN-spot: each spot's expression as a composition over cell-type prototypes.

The spot-level variant of CPNN (Nishimura et al.; digest ``../shared/papers/digest-cpnn.md``,
paper section 3.2), implemented from the paper:

- prototypes ``T0`` (cell types x genes) = mean expression per cell type of a single-cell
  reference (``obs[label_key]``), each row normalised to sum to 1
  (:func:`histoviz.models.slide.cpnn.build_prototypes`, the paper's "average prototype"; no
  cell2location regression); refined in training (``T = softmax_genes(log T)``) with the
  penalty ``lambda_proto * ||T0 - T||^2`` (the paper's prototype term; no proportion term at
  spot level);
- per-spot composition weights ``w = softmax(MLP(x))`` (two linear layers with GELU);
- expression ``e_g = (w T)_g + beta_g`` (``beta > 0``, the modality shift), put into the target
  space (normalised ``log1p``) by a per-gene affine map of ``log e``;
- loss: the paper's Pearson-correlation loss (``loss="pcc"``: minus the mean over genes of the
  correlation across the spots of a batch), or MSE. Correlation is blind to each gene's scale and
  offset, so after training the affine map ``y = a_g log e_g + b_g`` is fitted by least squares
  on the training spots (for both losses).

Genes absent from the reference get prototype entries learned from a flat start, without
the penalty. ``predict_patches`` also returns the composition weights (``cell_type`` output).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from histoviz.errors import ConfigError, DataError
from histoviz.models._torch import TorchSlideModel, feature_stats
from histoviz.models.registry import register_model
from histoviz.models.spot._base import SpotModel

__all__ = ["CPNNSpotRegressor"]

log = logging.getLogger(__name__)


def _net(arch: Mapping[str, Any], proto_init: np.ndarray | None = None) -> Any:
    import torch
    from torch import nn

    class CPNNSpotNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c, g, h = arch["n_types"], arch["n_genes"], arch["hidden"]
            self.weight_mlp = nn.Sequential(nn.Linear(arch["in_dim"], h), nn.GELU(), nn.Dropout(arch["dropout"]),
                                            nn.Linear(h, c))
            init = torch.zeros(c, g) if proto_init is None else torch.from_numpy(np.log(np.maximum(proto_init, 1e-12))).float()
            self.register_buffer("log_proto_init", init.clone())
            self.register_buffer("in_reference", torch.ones(g, dtype=torch.bool))
            if arch["prototypes"] == "frozen":
                self.register_buffer("log_proto", init.clone())
            else:
                self.log_proto = nn.Parameter(init.clone())
            self.log_beta = nn.Parameter(torch.full((g,), float(np.log(1e-3 / g))))
            self.register_buffer("a", torch.ones(g))
            self.register_buffer("b", torch.zeros(g))

        def prototypes(self) -> torch.Tensor:
            return torch.softmax(self.log_proto, dim=1)

        def weights(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.weight_mlp(x), dim=-1)

        def log_expression(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(self.weights(x) @ self.prototypes() + torch.exp(self.log_beta))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a * self.log_expression(x) + self.b

        def penalty(self) -> torch.Tensor:
            d = (self.prototypes() - torch.softmax(self.log_proto_init, dim=1)) ** 2
            return (d * self.in_reference.float()[None, :]).sum()

    return CPNNSpotNet()


def _pcc_loss(pred: Any, y: Any) -> Any:
    """Minus the mean over genes of Pearson's r across the spots of a batch."""
    import torch

    pc = pred - pred.mean(0, keepdim=True)
    yc = y - y.mean(0, keepdim=True)
    r = (pc * yc).sum(0) / torch.sqrt((pc * pc).sum(0) * (yc * yc).sum(0) + 1e-8)
    return -r.mean()


@register_model("cpnn-spot", needs_reference=True, outputs=("cell_type",), description="CPNN at spot level: per-spot composition over scRNA prototypes (spots)")
class CPNNSpotRegressor(SpotModel, TorchSlideModel):
    """Spot expression through cell-type prototypes (see the module docstring).

    Parameters
    ----------
    reference
        scRNA reference: ``.h5ad`` path or ``"scanpy:pbmc68k_reduced"``; or a prototype table
        (``.csv``/``.tsv``/``.parquet``, cell types x genes).
    label_key, reference_layer, reference_use_raw, reference_log1p
        Where the reference keeps labels and expression.
    hidden, dropout
        Weight MLP.
    loss
        ``"pcc"`` (paper, spot level) or ``"mse"``.
    prototypes
        ``"refine"`` (paper), ``"frozen"`` or ``"scratch"`` (ablations).
    lambda_proto
        Weight of the prototype penalty (paper: 1e3; ignored for frozen / scratch).
    **loop
        Loop settings (:class:`~histoviz.nn.settings.LoopSettings`; paper: AdamW, lr 1e-3;
        defaults here: 60 epochs, batch 64, patience 10).
    """

    loop_defaults = {"epochs": 60, "batch_size": 64, "patience": 10, "max_patches": 0}

    def __init__(
        self,
        *,
        reference: str = "",
        label_key: str = "cell_type",
        reference_layer: str | None = None,
        reference_use_raw: bool = False,
        reference_log1p: bool = False,
        hidden: int = 256,
        dropout: float = 0.1,
        loss: str = "pcc",
        prototypes: str = "refine",
        lambda_proto: float = 1e3,
        **loop: Any,
    ) -> None:
        super().__init__(**loop)
        if loss not in ("pcc", "mse"):
            raise ConfigError(f"loss must be 'pcc' or 'mse', got {loss!r}")
        if prototypes not in ("refine", "frozen", "scratch"):
            raise ConfigError(f"prototypes must be refine, frozen or scratch, got {prototypes!r}")
        self.reference = reference
        self.label_key = label_key
        self.reference_layer = reference_layer
        self.reference_use_raw = reference_use_raw
        self.reference_log1p = reference_log1p
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.prototypes = prototypes
        self.lambda_proto = lambda_proto

    _make_net = staticmethod(lambda arch: _net(arch))

    def _prototypes(self, genes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
        """``(cell types x genes)`` initial prototypes over ``genes`` and the in-reference mask."""
        from histoviz.models.slide.cpnn import build_prototypes, load_reference, prototype_table

        if not self.reference:
            raise ConfigError("cpnn-spot needs reference= (an scRNA .h5ad with cell-type labels, or a prototype table)")
        if str(self.reference).endswith((".csv", ".tsv", ".parquet")):
            proto = prototype_table(self.reference, genes)
        else:
            proto = build_prototypes(load_reference(self.reference), genes, label_key=self.label_key,
                                     layer=self.reference_layer, use_raw=self.reference_use_raw,
                                     log1p_input=self.reference_log1p)
        full = proto.reindex(columns=genes)
        in_ref = full.notna().all(axis=0).to_numpy()
        if in_ref.sum() < 2:
            raise DataError(f"cpnn-spot: the reference shares {int(in_ref.sum())} gene(s) with the targets")
        fill = float(np.nanmedian(full.to_numpy()))
        t0 = full.fillna(fill).to_numpy(np.float64)
        t0 /= t0.sum(axis=1, keepdims=True)
        if (~in_ref).any():
            log.info("cpnn-spot: %d of %d targets are not in the reference (learned without the penalty)",
                     int((~in_ref).sum()), len(genes))
        return pd.DataFrame(t0, index=proto.index, columns=genes), in_ref

    def _fit_spots(self, x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        import torch

        from histoviz.nn.loop import seed_everything, train_module

        seed_everything(self.loop.seed)
        dev = self._device()
        genes = list(self.targets_[self.modalities_[0]])
        t0, in_ref = self._prototypes(genes)
        self.cell_types_ = [str(c) for c in t0.index]
        self.feature_mean_, self.feature_std_ = feature_stats([x])
        self.arch_ = {"in_dim": int(x.shape[1]), "n_types": len(self.cell_types_), "n_genes": len(genes),
                      "hidden": int(self.hidden), "dropout": float(self.dropout), "prototypes": self.prototypes}
        init = t0.to_numpy()
        if self.prototypes == "scratch":
            rng = np.random.default_rng(self.loop.seed)
            init = np.exp(rng.normal(0.0, 1.0, init.shape)) * init.mean(axis=0, keepdims=True)
            init /= init.sum(axis=1, keepdims=True)
        net = _net(self.arch_, init)
        with torch.no_grad():
            net.in_reference.copy_(torch.from_numpy(in_ref))
        net.to(dev)
        self.module_ = net
        lam = 0.0 if self.prototypes in ("frozen", "scratch") else float(self.lambda_proto)
        ystd = np.asarray(y, np.float32).std(axis=0)
        ystd = np.where(ystd > 1e-6, ystd, 1.0).astype(np.float32)
        ymean = np.asarray(y, np.float32).mean(axis=0)

        def tensors(a: np.ndarray, b: np.ndarray) -> tuple[Any, Any]:
            xs = (np.asarray(a, np.float32) - self.feature_mean_) / self.feature_std_
            ys = (np.asarray(b, np.float32) - ymean) / ystd
            return torch.from_numpy(xs).to(dev), torch.from_numpy(ys).to(dev)

        xt, yt = tensors(x, y)

        if self.loss == "mse":  # a / b are learned jointly with MSE (refitted by least squares after)
            net.a = torch.nn.Parameter(torch.ones(len(genes), device=dev))
            net.b = torch.nn.Parameter(torch.zeros(len(genes), device=dev))

        def data_loss(xb: Any, yb: Any) -> Any:
            if self.loss == "pcc":
                return _pcc_loss(net.log_expression(xb), yb)
            return ((net(xb) - yb) ** 2).mean()

        def step(idx: np.ndarray, rng: np.random.Generator) -> tuple[Any, dict[str, float]]:
            ii = torch.from_numpy(np.asarray(idx)).to(dev)
            loss = data_loss(xt[ii], yt[ii])
            if lam:
                loss = loss + lam * net.penalty()
            return loss, {}

        validate = None
        if val is not None:
            xv, yv = tensors(*val)

            def validate() -> dict[str, float]:
                return {"total": float(data_loss(xv, yv))}

        self.fit_info_ = train_module(net, len(xt), step, settings=self.loop, validate=validate,
                                      desc="cpnn-spot")
        # the affine map to the target space: least squares per gene on all training spots
        xa = x if val is None else np.concatenate([x, val[0]])
        ya = y if val is None else np.concatenate([y, val[1]])
        z = self._log_expression(xa).astype(np.float64)
        zc = z - z.mean(0)
        yc = np.asarray(ya, np.float64) - np.asarray(ya, np.float64).mean(0)
        var = (zc * zc).sum(0)
        a = np.where(var > 1e-12, (zc * yc).sum(0) / np.maximum(var, 1e-12), 0.0)
        b = np.asarray(ya, np.float64).mean(0) - a * z.mean(0)
        if self.loss == "mse":
            del net.a, net.b
            net.register_buffer("a", torch.ones(len(genes), device=dev))
            net.register_buffer("b", torch.zeros(len(genes), device=dev))
        with torch.no_grad():
            net.a.copy_(torch.from_numpy(a).float())
            net.b.copy_(torch.from_numpy(b).float())
        net.eval()

    def _log_expression(self, x: np.ndarray) -> np.ndarray:
        import torch

        xs = (np.asarray(x, np.float32) - self.feature_mean_) / self.feature_std_
        self.module_.eval()
        with torch.no_grad():
            return self.module_.log_expression(torch.from_numpy(xs).to(self._device())).cpu().numpy()

    def _predict_spots(self, x: np.ndarray) -> np.ndarray:
        import torch

        xs = (np.asarray(x, np.float32) - self.feature_mean_) / self.feature_std_
        self.module_.eval()
        with torch.no_grad():
            return self.module_(torch.from_numpy(xs).to(self._device())).cpu().numpy()

    def composition(self, x: np.ndarray) -> pd.DataFrame:
        """Per-spot cell-type weights ``w`` (rows sum to 1)."""
        import torch

        xs = (np.asarray(x, np.float32) - self.feature_mean_) / self.feature_std_
        self.module_.eval()
        with torch.no_grad():
            w = self.module_.weights(torch.from_numpy(xs).to(self._device())).cpu().numpy()
        return pd.DataFrame(w, columns=self.cell_types_)

    def _spot_extra(self, x: np.ndarray) -> dict[str, Any]:
        return {"cell_type": self.composition(x)}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = TorchSlideModel._state(self)
        meta["cell_types"] = self.cell_types_
        return meta, arrays

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        TorchSlideModel._load_state(self, meta, arrays)
        self.cell_types_ = list(meta["cell_types"])
