"""Hand measurement for issue 13 (to be folded into the bench): torch eager vs OpenVINO.

One process, interleaved repeats, medians; prints ratios (the machine is shared, absolute
figures move with the load). Forward: pre-decoded batches of 32 demo images. Cold: the
product's ImageEmbedder on N demo images with no embedding cache (read, hash, decode,
letterbox, forward), per runtime; decode: the same decode+letterbox alone in the pool.

    CATALOG_CLASSIFIER_THREADS=2 PYTHONPATH=. .venv/bin/python scripts/measure_runtime.py [N] [REPEATS]

Two runs on the 2-core dev machine under heavy load from other work (load average ~10),
medians, ratios only: OpenVINO fp32 / torch eager forward 8.2x and 8.9x; cold embedding
OpenVINO / torch 5.3x and 4.8x; OpenVINO cold / OpenVINO forward 0.89 and 1.06; decode +
letterbox alone ~15x the OpenVINO forward rate. Under that load single ratios move ~30%.
OpenVINO's compile and infer settings side by side: scripts/measure_ov_settings.py.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import build_transform, load_backbone
from catalog_classifier.features.embeddings import ImageEmbedder
from catalog_classifier.features.images import decode_image
from catalog_classifier.features.runtimes import load_runtime

IMAGES = Path(__file__).resolve().parents[1] / "data" / "flipkart1050" / "images"


def main(n: int = 192, repeats: int = 5) -> None:
    torch.set_num_threads(int(os.environ.get("CATALOG_CLASSIFIER_THREADS", "2")))
    files = sorted(IMAGES.glob("*.jpg"))[:n]
    refs = [str(f) for f in files]
    module = load_backbone(ImageConfig(device="cpu"))
    cfgs = {name: ImageConfig(device="cpu", runtime=rt, precision=p, cache_dir="")
            for name, rt, p in (("torch", "torch", "fp32"), ("openvino", "openvino", "fp32"))}
    runtimes = {name: load_runtime(c, module) for name, c in cfgs.items()}
    embedders = {name: ImageEmbedder(c, model=runtimes[name]) for name, c in cfgs.items()}
    transform = build_transform(224)
    batches = [torch.stack([transform(decode_image(f.read_bytes(), 10**8, 224)[0]) for f in files[s:s + 32]])
               for s in range(0, len(files) - 31, 32)]
    datas = [f.read_bytes() for f in files]
    for rt in runtimes.values():  # warm-up
        rt(batches[0])

    def decode_only():
        with ThreadPoolExecutor(min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda d: transform(decode_image(d, 10**8, 224)[0]), datas))

    rates: dict[str, list[float]] = {}
    for _ in range(repeats):  # interleaved: every measurement sees the same background load
        for name, rt in runtimes.items():
            t = time.perf_counter()
            for b in batches:
                rt(b)
            rates.setdefault(f"{name}_forward", []).append(sum(len(b) for b in batches) / (time.perf_counter() - t))
        for name, emb in embedders.items():
            t = time.perf_counter()
            res = emb.embed(refs)
            assert res.n_computed + res.n_reused == len(refs) and res.n_cached == 0
            rates.setdefault(f"{name}_cold", []).append(len(refs) / (time.perf_counter() - t))
        t = time.perf_counter()
        decode_only()
        rates.setdefault("decode_only", []).append(len(refs) / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:18s} median {v:7.1f} img/s  ({', '.join(f'{x:.1f}' for x in rates[k])})")
    print(f"openvino/torch forward   {med['openvino_forward'] / med['torch_forward']:.2f}x")
    print(f"openvino/torch cold      {med['openvino_cold'] / med['torch_cold']:.2f}x")
    print(f"cold/forward (openvino)  {med['openvino_cold'] / med['openvino_forward']:.2f}")
    print(f"cold/forward (torch)     {med['torch_cold'] / med['torch_forward']:.2f}")
    print(f"decode/forward (openvino) {med['decode_only'] / med['openvino_forward']:.2f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
