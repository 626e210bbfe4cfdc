"""Hand check: does the static OpenVINO batch change any image feature the committed CV used?

Embeds every demo image with the IR compiled as before (dynamic batch, calls of 32) and as the
product does now (``compile_openvino``: static ``image.openvino_batch``), and writes the largest
difference to reports/openvino_batch_features.json. Run 2026-12-05: max abs diff 0.0 over 1,047
images (bit-identical), so the committed CV figures stand unchanged without a re-run.

    PYTHONPATH=. .venv/bin/python scripts/check_openvino_batch_features.py
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from catalog_classifier.config import ImageConfig
from catalog_classifier.features.backbone import build_transform
from catalog_classifier.features.images import decode_image
from catalog_classifier.features.openvino_cpu import cpu_config
from catalog_classifier.features.runtimes import OpenVINORuntime, compile_openvino, ensure_openvino_ir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import openvino as ov

    cfg = ImageConfig(device="cpu", export_dir=str(ROOT / "out" / "ov-export"))
    transform = build_transform(224)
    xs = []
    for f in sorted((ROOT / "data" / "flipkart1050" / "images").glob("*.jpg")):
        img, _ = decode_image(f.read_bytes(), 10**8, 224)
        if img is not None:
            xs.append(transform(img))
    x = torch.stack(xs)
    dynamic = ov.Core().compile_model(ensure_openvino_ir(cfg, "fp32"), "CPU", cpu_config("fp32")).create_infer_request()
    before = np.concatenate([np.array(dynamic.infer({0: x[s:s + 32].numpy()})[0], copy=True)
                             for s in range(0, len(x), 32)])
    now = OpenVINORuntime(compile_openvino(cfg, "fp32"), "fp32")(x).numpy()
    out = {"images": len(x), "openvino_batch": cfg.openvino_batch, "before": "dynamic batch, calls of 32",
           "max_abs_diff": float(np.abs(before - now).max()), "identical": bool(np.array_equal(before, now)),
           "how": "scripts/check_openvino_batch_features.py"}
    (ROOT / "reports" / "openvino_batch_features.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
