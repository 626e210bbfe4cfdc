"""OpenVINO on the CPU, with no product configuration: the compile settings every compiled
graph uses, and a small torch module (the char-CNN) compiled in memory.

Kept apart from ``features/runtimes.py`` (the image backbone's runtimes, which read
``ImageConfig``) so that base models can use it without importing the configuration.
"""
from __future__ import annotations

import os
import threading
import warnings

import numpy as np
import torch
from torch import nn

OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def ov_threads() -> int:
    """torch's thread setting (the nightly job and the Ray actors set it), capped by CATALOG_CLASSIFIER_THREADS."""
    env = os.environ.get("CATALOG_CLASSIFIER_THREADS")
    return max(1, min(torch.get_num_threads(), int(env)) if env else torch.get_num_threads())


def cpu_config(precision: str) -> dict:
    """OpenVINO CPU compile settings: the precision hint, latency mode, ``ov_threads()`` threads."""
    return {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": ov_threads()}


class CompiledModule:
    """A small torch module (e.g. the char-CNN) compiled in memory for OpenVINO's CPU plugin.

    Same call as the module on one input tensor, float32 output as a torch tensor; at fp32
    the outputs equal torch's within float rounding (tests/test_runtime.py). One infer request,
    so calls from several threads take turns.
    """

    def __init__(self, module: nn.Module, example: torch.Tensor, precision: str = "fp32"):
        import openvino as ov

        shape = [-1, *example.shape[1:]]  # any batch size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = ov.convert_model(module.eval(), example_input=example, input=[shape])
        self._request = ov.Core().compile_model(graph, "CPU", cpu_config(precision)).create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            out = self._request.infer({0: np.ascontiguousarray(x.numpy())}, share_inputs=True, share_outputs=True)
            return torch.from_numpy(np.array(out[0], dtype=np.float32, copy=True))
