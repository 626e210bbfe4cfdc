"""CUDA-only measurements: batched JPEG decode on the GPU feeding the CNN.

The product's embedder decodes with PIL on the CPU (``features/images.py``); on a GPU
machine that becomes the bottleneck long before the bf16 channels_last forward pass does.
This measures what the whole image path reaches when the decode moves to the device too:
``torchvision.io.decode_jpeg(list_of_byte_tensors, device='cuda')`` (nvJPEG, batched),
letterbox onto white with an antialiased bicubic resize on the device, [-1, 1] scaling,
then the product's ``embed_forward`` (bf16 autocast + channels_last on CUDA).
Non-JPEG files are left out of this figure (nvJPEG decodes JPEG only).
"""
from __future__ import annotations

import time


def _letterbox(img, size: int, device):
    import torch
    import torch.nn.functional as F

    _, h, w = img.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(img[None].float(), size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
    canvas = torch.full((3, size, size), 255.0, device=device)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[:, top:top + nh, left:left + nw] = x.clamp_(0, 255)
    return canvas.div_(127.5).sub_(1.0)  # mean = std = 0.5 on [0, 1]


def gpu_decode_pipeline(model, refs, image_root, batch_size: int, image_size: int,
                        max_bytes: int = 20_000_000) -> dict:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from catalog_classifier.features.backbone import embed_forward
    from catalog_classifier.features.images import read_image_bytes

    device = next(model.parameters()).device
    blobs = []
    for ref in refs:
        data, _ = read_image_bytes(ref, image_root, max_bytes)
        if data is not None and data[:3] == b"\xff\xd8\xff":
            blobs.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    if not blobs:
        return {"items_per_s": None, "images": 0, "note": "no JPEG images"}

    def decode(part):
        return [_letterbox(im, image_size, device) for im in decode_jpeg(part, mode=ImageReadMode.RGB, device=device)]

    def one_pass(with_cnn: bool) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(blobs), batch_size):
            batch = torch.stack(decode(blobs[i:i + batch_size]))
            if with_cnn:
                embed_forward(model, batch)
        torch.cuda.synchronize()
        return len(blobs) / (time.perf_counter() - t0)

    one_pass(True)  # warm-up: nvJPEG handles, cuDNN autotuning
    decode_only = max(one_pass(False) for _ in range(2))
    pipeline = max(one_pass(True) for _ in range(2))
    return {"items_per_s": round(pipeline, 1), "decode_only_items_per_s": round(decode_only, 1),
            "images": len(blobs), "batch": batch_size,
            "decode": "torchvision.io.decode_jpeg(device='cuda'), batched; letterbox + resize on the device",
            "precision": "bf16 autocast, channels_last"}
