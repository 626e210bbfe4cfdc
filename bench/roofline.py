"""The FLOP roofline of the image forward pass: counted FLOPs x img/s against the measured GEMM peak.

``gflop_per_image`` counts the backbone's FLOPs on one 224x224 image with torch's own
``FlopCounterMode`` (convolutions and matmuls, 2 FLOPs per multiply-add; the pooled graph
the runtimes run). ``matmul_peak`` measures the machine's fp32 GEMM rate in the same
process and thread setting, with torch and with OpenVINO (its CPU plugin runs the forward
pass, and its GEMM kernels may beat torch's BLAS on this CPU); the peak is the faster of the
two, so the fraction never credits the runtime against a slow BLAS.
"""
from __future__ import annotations

import time

import torch
from torch import nn


def gflop_per_image(module: nn.Module, image_size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from catalog_classifier.features.runtimes import _Pooled

    net = _Pooled(module).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(torch.zeros(1, 3, image_size, image_size, device=next(module.parameters()).device))
    return counter.get_total_flops() / 1e9


class _MatMul(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def _best_rate(fn, x, n: int, repeats: int) -> float:
    fn(x)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_peak(n: int = 2048, repeats: int = 3) -> dict:
    """GFLOP/s of an n x n x n fp32 GEMM, best of ``repeats``, per implementation, and their max."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = {"n": n, "torch_gflops": round(_best_rate(lambda x: x @ b, a, n, repeats), 1)}
    try:
        from catalog_classifier.features.openvino_cpu import CompiledModule

        out["openvino_gflops"] = round(_best_rate(CompiledModule(_MatMul(b), a[:2]), a, n, repeats), 1)
    except ImportError:
        pass
    out["peak_gflops"] = max(v for k, v in out.items() if k.endswith("_gflops"))
    return out
