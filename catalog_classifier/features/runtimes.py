"""Where the image backbone's forward pass runs: torch eager or OpenVINO.

``image.runtime: auto`` runs OpenVINO on the CPU (about 8x torch eager on the same cores,
features equal to torch's within float rounding at fp32) and torch on CUDA. The OpenVINO
IR is exported from the torch model once per backbone identity (weights sha256, image size,
precision, OpenVINO version) into ``image.export_dir`` and reused by every later process;
the export is written to a temporary folder and renamed into place, so two processes
racing both end with one complete IR and neither reads a half-written one. Nothing is
exported or imported at import time: only when a batch actually has to go through the CNN.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings

import numpy as np
import torch
from torch import nn

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.openvino_cpu import cpu_config
from catalog_classifier.features.backbone import (
    EMBED_DIM, _arch, as_batch, file_sha256, input_size, load_backbone, resolve_precision, resolve_runtime,
    torch_forward,
)

log = logging.getLogger(__name__)
EXPORT_VERSION = "pooled-v1"  # bump when what the exported graph computes changes


class _Pooled(nn.Module):
    """The graph that is exported: image batch -> globally pooled 1280-d features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class TorchRuntime:
    name = "torch"

    def __init__(self, module: nn.Module, precision: str):
        self.module, self.precision = module, precision

    def __call__(self, batch) -> torch.Tensor:
        return torch_forward(self.module, as_batch(batch), self.precision)


class OpenVINORuntime:
    """The compiled IR, for a static batch of ``compiled``'s input shape; any batch is run in
    slices of that size, the last one padded (image.openvino_batch)."""

    name = "openvino"

    def __init__(self, compiled, precision: str):
        self.compiled, self.precision = compiled, precision
        self._request = compiled.create_infer_request()
        self.batch = int(compiled.input(0).get_partial_shape()[0].get_length())

    def __call__(self, batch) -> torch.Tensor:
        """``batch``: a tensor [n, 3, S, S] or a sequence of [3, S, S] images. A sequence is never
        copied into one big array (each slice is, when the compiled batch is above 1)."""
        n, b = len(batch), self.batch
        out = np.empty((n, EMBED_DIM), dtype=np.float32)
        for s in range(0, n, b):
            part = _slice(batch, s, b)
            # releases the GIL: decode threads keep running. The input is read in place and the
            # output copied out of the request's own buffer (the next call overwrites it).
            res = self._request.infer({0: part}, share_inputs=True, share_outputs=True)
            out[s:s + b] = res[0][:min(b, n - s)]
        return torch.from_numpy(out)


def _slice(batch, start: int, size: int) -> np.ndarray:
    """Images start..start+size of a tensor or a sequence as one C-contiguous float32 array of
    exactly ``size`` images (zero-padded at the end): a view where that needs no copy."""
    part = batch[start:start + size]
    if isinstance(part, torch.Tensor):
        x = part.numpy()
    elif len(part) == 1:
        x = np.asarray(part[0])[None]  # a view of the one image
    else:
        x = np.stack([np.asarray(t) for t in part])
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < size:
        x = np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), np.float32)])
    return x


def export_identity(cfg: ImageConfig, precision: str) -> dict:
    import openvino

    return {"arch": _arch(cfg.backbone), "weights_sha256": file_sha256(cfg), "image_size": input_size(cfg),
            "runtime": "openvino", "precision": precision, "openvino": openvino.__version__,
            "export": EXPORT_VERSION}


def export_path(cfg: ImageConfig, precision: str) -> str:
    ident = json.dumps(export_identity(cfg, precision), sort_keys=True)
    return os.path.join(cfg.export_dir, hashlib.sha256(ident.encode()).hexdigest()[:20])


def ensure_openvino_ir(cfg: ImageConfig, precision: str, module: nn.Module | None = None) -> str:
    """Path of the exported IR (model.xml), exporting it first when no process has yet."""
    final = export_path(cfg, precision)
    xml = os.path.join(final, "model.xml")
    if os.path.isfile(xml):
        return xml
    import openvino as ov

    os.makedirs(cfg.export_dir, exist_ok=True)
    module = module if module is not None else load_backbone(cfg)
    size = input_size(cfg)
    tmp = tempfile.mkdtemp(dir=cfg.export_dir, prefix=".export-")
    try:
        with warnings.catch_warnings():  # tracing warnings from timm's TF-"same" padding
            warnings.simplefilter("ignore")
            graph = ov.convert_model(_Pooled(module.cpu()).eval(), example_input=torch.zeros(1, 3, size, size),
                                     input=[(-1, 3, size, size)])
        ov.save_model(graph, os.path.join(tmp, "model.xml"), compress_to_fp16=False)
        with open(os.path.join(tmp, "identity.json"), "w") as fh:
            json.dump(export_identity(cfg, precision), fh, sort_keys=True)
        try:
            os.rename(tmp, final)  # atomic; fails when another process got there first
            log.info("exported the image backbone to OpenVINO IR in %s", final)
        except OSError:
            if not os.path.isfile(xml):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def compile_openvino(cfg: ImageConfig, precision: str, module: nn.Module | None = None):
    """The IR compiled for a static batch of ``cfg.openvino_batch`` images (a dynamic batch costs
    a slow first call for every batch size it meets, and large batches run slower on few cores)."""
    import openvino as ov

    core = ov.Core()
    graph = core.read_model(ensure_openvino_ir(cfg, precision, module))
    size = input_size(cfg)
    graph.reshape([cfg.openvino_batch, 3, size, size])
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        # OpenVINO then runs fp32 without a word: features as fp32's, the speed-up absent
        log.warning("image.precision bf16: this CPU has no bf16 instructions, OpenVINO runs fp32")
    return core.compile_model(graph, "CPU", cpu_config(precision))


def load_runtime(cfg: ImageConfig, module: nn.Module | None = None):
    """The configured runtime around the backbone; ``module`` (from load_backbone(cfg)) saves a reload."""
    runtime, precision = resolve_runtime(cfg), resolve_precision(cfg)
    if runtime == "openvino":
        return OpenVINORuntime(compile_openvino(cfg, precision, module), precision)
    return TorchRuntime(module if module is not None else load_backbone(cfg), precision)
