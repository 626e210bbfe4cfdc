"""Hand measurement: how many images per OpenVINO call, for the image backbone on the CPU.

The product compiles the exported IR for a static batch (``image.openvino_batch``) and runs
bigger batches in slices. This script puts the candidates side by side: a dynamic batch of 32
(the product's setting until 2026-12-05) and static batches of 32, 8, 4, 2 and 1, all with the
product's compile settings (``cpu_config``: LATENCY hint, torch's thread count, 2 here), sync infer. Two figures per setting:

- first call: a fresh process compiles the graph and times its first and second call; the
  difference is what every nightly process pays once (and a dynamic batch pays again for
  every batch size it has not met yet: a chunk's last, partial batch);
- steady img/s: one process, interleaved repeats, order reversed every other repeat, medians,
  on the same pre-decoded demo images; only ratios measured in one run mean anything.

    PYTHONPATH=. .venv/bin/python scripts/measure_ov_settings.py [N] [REPEATS]

Run 2026-12-05 on the idle 2-core dev machine, 256 images, 5 repeats:

    setting     first-call extra   steady img/s (x dynamic 32)
    dynamic 32        1753 ms        338  x1.000
    static 32         1153 ms        335  x0.990
    static 8           337 ms        370  x1.093
    static 4           194 ms        399  x1.180
    static 2            81 ms        401  x1.186
    static 1            42 ms        416  x1.228

every setting's features cosine >= 0.9999999 to torch; hence ``openvino_batch: 1``. Earlier
runs (2026-12-01, heavy load) found thread, pinning, zero-copy and THROUGHPUT/AsyncInferQueue
settings at batch 32 all within noise.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import build_transform, load_backbone, torch_forward
from catalog_classifier.features.images import decode_image
from catalog_classifier.features.openvino_cpu import cpu_config
from catalog_classifier.features.runtimes import ensure_openvino_ir

IMAGES = Path(__file__).resolve().parents[1] / "data" / "flipkart1050" / "images"
CFG = ImageConfig(device="cpu", runtime="openvino", precision="fp32", export_dir="out/ov-export")
SETTINGS = {"dynamic 32": (None, 32), "static 32": (32, 32), "static 8": (8, 8), "static 4": (4, 4),
            "static 2": (2, 2), "static 1": (1, 1)}


def _compiled(core, xml: str, static: int | None):
    m = core.read_model(xml)
    if static:
        m.reshape([static, 3, 224, 224])
    return core.compile_model(m, "CPU", cpu_config("fp32"))  # the product's own compile settings


def _images(n: int) -> np.ndarray:
    transform = build_transform(224)
    files = sorted(IMAGES.glob("*.jpg"))[:n]
    return torch.stack([transform(decode_image(f.read_bytes(), 10**8, 224)[0]) for f in files]).numpy()


def first_call(name: str) -> None:
    """In a fresh process: compile, then the first and the second call of one batch."""
    import openvino as ov

    torch.set_num_threads(2)
    static, size = SETTINGS[name]
    x = _images(2 * size)
    c = _compiled(ov.Core(), ensure_openvino_ir(CFG, "fp32"), static)
    req = c.create_infer_request()
    times = []
    for part in (x[:size], x[size:]):
        t = time.perf_counter()
        req.infer({0: part})
        times.append(time.perf_counter() - t)
    print(f"{times[0] - times[1]:.4f}")


def main(n: int = 256, repeats: int = 5) -> None:
    import openvino as ov

    torch.set_num_threads(2)
    x = _images(n)
    module = load_backbone(CFG)
    xml = ensure_openvino_ir(CFG, "fp32", module)
    ref = torch_forward(module, torch.from_numpy(x[:32]), "fp32").numpy()
    core = ov.Core()
    runners = {}
    for name, (static, size) in SETTINGS.items():
        req = _compiled(core, xml, static).create_infer_request()

        def run(req=req, size=size) -> np.ndarray:
            return np.concatenate([np.array(req.infer({0: x[s:s + size]}, share_inputs=True)[0], copy=True)
                                   for s in range(0, len(x) - size + 1, size)])
        out = run()[:32]
        cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
        extra = float(subprocess.run([sys.executable, __file__, "--first-call", name], capture_output=True,
                                     text=True, check=True).stdout.split()[-1])
        print(f"{name:11s} min cosine to torch {cos.min():.7f}  first-call extra {1000 * extra:7.1f} ms", flush=True)
        runners[name] = run
    rates: dict[str, list[float]] = {}
    for r in range(repeats):
        order = list(runners.items())
        if r % 2:
            order.reverse()
        for name, run in order:
            t = time.perf_counter()
            run()
            rates.setdefault(name, []).append(n / (time.perf_counter() - t))
    base = statistics.median(rates["dynamic 32"])
    for k, v in rates.items():
        m = statistics.median(v)
        print(f"{k:11s} median {m:6.1f} img/s  x{m / base:.3f}  ({', '.join(f'{x:.0f}' for x in v)})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--first-call"]:
        first_call(sys.argv[2])
    else:
        main(*(int(a) for a in sys.argv[1:3]))
