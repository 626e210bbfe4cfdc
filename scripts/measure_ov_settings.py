"""Hand measurement: OpenVINO CPU compile/infer settings for the image backbone, side by side.

One process, interleaved repeats, medians of img/s on the same pre-decoded batches of 32
demo images; the machine is shared, so only ratios measured in one run mean anything.

    CATALOG_CLASSIFIER_THREADS=2 PYTHONPATH=. .venv/bin/python scripts/measure_ov_settings.py [N] [REPEATS]

Run 2026-12-01 on the 2-core dev machine under heavy load from other work (load average
~15, so absolute img/s were ~21, an eighth of the idle figure; only the ratios mean
anything), 256 images, 5 interleaved repeats, order reversed every other repeat, median
ratio to the product's setting (LATENCY hint, INFERENCE_NUM_THREADS=2, dynamic batch,
sync infer): no thread setting 0.99, static [32,3,224,224] 1.02, static + zero-copy
in/out 1.06, CPU pinning off 1.06, THROUGHPUT 1 stream + AsyncInferQueue(2) 0.89,
THROUGHPUT 2 streams + AsyncInferQueue(2) 0.98 (static 1.01), right after a torch
forward in the same process 0.91. Single repeats spread +-20%, so none of these is
a lever; every variant's features were cosine >= 0.9999999 to torch (fp32 kept).
What bounds the forward pass is arithmetic: 0.768 GFLOP/image against the bench's
measured fp32 GEMM peak of 176 GFLOP/s allows at most ~229 img/s on these two cores at
100% of peak; the committed 160 img/s is 0.70 of it. The 294 img/s fp32 quoted in
issue 13 would be 226 GFLOP/s, above this CPU's fp32 peak, so it cannot have been
fp32 on two cores at this clock.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import build_transform, load_backbone, torch_forward
from catalog_classifier.features.images import decode_image
from catalog_classifier.features.runtimes import ensure_openvino_ir

IMAGES = Path(__file__).resolve().parents[1] / "data" / "flipkart1050" / "images"


def main(n: int = 256, repeats: int = 5) -> None:
    import openvino as ov

    torch.set_num_threads(2)
    files = sorted(IMAGES.glob("*.jpg"))[:n]
    transform = build_transform(224)
    xs = [transform(decode_image(f.read_bytes(), 10**8, 224)[0]) for f in files]
    batches = [torch.stack(xs[s:s + 32]).numpy() for s in range(0, len(xs) - 31, 32)]
    cfg = ImageConfig(device="cpu", runtime="openvino", precision="fp32", export_dir="out/ov-export")
    module = load_backbone(cfg)
    xml = ensure_openvino_ir(cfg, "fp32", module)
    core = ov.Core()
    ref = torch_forward(module, torch.from_numpy(batches[0]), "fp32").numpy()

    def compiled(static: bool, **props):
        m = core.read_model(xml)
        if static:
            m.reshape([32, 3, 224, 224])
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **props})

    def sync_runner(c, share=False):
        req = c.create_infer_request()
        def run(bs):
            for b in bs:
                out = req.infer({0: b}, share_inputs=share, share_outputs=share)
                np.array(out[0], copy=True)
        return run, lambda b: np.array(req.infer({0: b})[0], copy=True)

    def async_runner(c, jobs):
        q = ov.AsyncInferQueue(c, jobs)
        res = {}
        q.set_callback(lambda r, i: res.__setitem__(i, np.array(r.get_output_tensor(0).data, copy=True)))
        def run(bs):
            for i, b in enumerate(bs):
                q.start_async({0: b}, i)
            q.wait_all()
        return run, lambda b: (q.start_async({0: b}, -1), q.wait_all(), res[-1])[-1]

    variants = {
        "LAT_t2_dyn(now)": sync_runner(compiled(False, PERFORMANCE_HINT="LATENCY", INFERENCE_NUM_THREADS=2)),
        "LAT_dyn_nothr": sync_runner(compiled(False, PERFORMANCE_HINT="LATENCY")),
        "LAT_t2_static": sync_runner(compiled(True, PERFORMANCE_HINT="LATENCY", INFERENCE_NUM_THREADS=2)),
        "LAT_t2_static_share": sync_runner(compiled(True, PERFORMANCE_HINT="LATENCY", INFERENCE_NUM_THREADS=2), True),
        "LAT_t2_nopin": sync_runner(compiled(False, PERFORMANCE_HINT="LATENCY", INFERENCE_NUM_THREADS=2,
                                             ENABLE_CPU_PINNING=False)),
        "TPUT_s1_async2": async_runner(compiled(False, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=1,
                                                INFERENCE_NUM_THREADS=2), 2),
        "TPUT_s2_async2": async_runner(compiled(False, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=2,
                                                INFERENCE_NUM_THREADS=2), 2),
        "TPUT_s2_async2_static": async_runner(compiled(True, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=2,
                                                       INFERENCE_NUM_THREADS=2), 2),
    }
    for name, (run, one) in variants.items():  # warm-up + same features as torch
        run(batches[:1])
        out = one(batches[0])
        cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
        print(f"{name:24s} min cosine to torch {cos.min():.7f}", flush=True)
    rates: dict[str, list[float]] = {}
    for r in range(repeats):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, (run, _) in order:
            t = time.perf_counter()
            run(batches)
            rates.setdefault(name, []).append(len(batches) * 32 / (time.perf_counter() - t))
        t = time.perf_counter()  # torch in the same process just before: does it slow OpenVINO?
        torch_forward(module, torch.from_numpy(batches[0]), "fp32")
        run0 = variants["LAT_t2_dyn(now)"][0]
        t = time.perf_counter()
        run0(batches)
        rates.setdefault("LAT_now_after_torch", []).append(len(batches) * 32 / (time.perf_counter() - t))
    base = statistics.median(rates["LAT_t2_dyn(now)"])
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"{k:24s} median {m:6.1f} img/s  x{m / base:.3f}  ({', '.join(f'{x:.0f}' for x in v)})")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
