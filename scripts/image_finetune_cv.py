"""Full fine-tuning of the image CNN (CUDA: bf16 autocast, channels_last) inside the evaluation's outer
folds, against the frozen head on the same folds and the same pixels.

Every image is decoded and letterboxed once with the product's own preprocessing
(``features.images.decode_image`` + ``features.backbone.build_transform``) and kept on the device;
training augments on the device (per-item random zoom / shift and horizontal flip via one batched
``affine_grid``), so a 2-core host does not starve the GPU. Per outer fold (``make_folds(y, 5, seed,
title groups)``, the evaluation's folds):

  frozen_<bb>   the product's image_head (StandardScaler + LogisticRegression C=1) on pooled frozen
                fp32 features of the same pixels
  tuned_<bb>    the whole backbone + a new linear head, AdamW (head 10x the body's LR), one-cycle
                schedule, label smoothing, early stopping on a random 12% slice of the training fold;
                prediction: mean of the original and the mirrored view
  tuned_selected  per outer fold, the backbone whose early-stopping slice (training rows only) scored
                best: the nested choice, no test-fold row consulted

The recipe is fixed before the run (no setting was tried on these folds first). Also measured:
fine-tune seconds and training images/s, inference images/s in bf16 and fp32, and bf16-vs-fp32
agreement (cosine of frozen pooled features; argmax agreement of the tuned models' predictions).

    python scripts/image_finetune_cv.py --device cuda --levels 1,2 \
        --backbones efficientnet_lite0,efficientnet_lite2 --json reports/image_finetune_cuda.json
    # plumbing check on a CPU: --device cpu --limit 120 --epochs 1 --backbones efficientnet_lite0
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_classifier.catalog import read_catalog  # noqa: E402
from catalog_classifier.catalog.cleaning import title_key  # noqa: E402
from catalog_classifier.classifier import CatalogClassifier  # noqa: E402
from catalog_classifier.config import load_config  # noqa: E402
from catalog_classifier.features import backbone as bb  # noqa: E402
from catalog_classifier.features.images import decode_image, read_image_bytes  # noqa: E402
from scripts.image_tune_cv import DEMO, EarlyStop, frozen_head  # noqa: E402
from stacking.folds import make_folds  # noqa: E402

RECIPE = {"epochs": 15, "batch": 48, "lr": 4e-4, "head_lr_mult": 10.0, "wd": 0.02, "smoothing": 0.1,
          "dropout": 0.2, "patience": 4, "val_frac": 0.12, "zoom": (0.75, 1.0), "shift": 0.08}


def load_pixels(cfg, refs: list, image_root: str, size: int, workers: int = 8) -> tuple[torch.Tensor, np.ndarray]:
    """The product's letterboxed [-1, 1] input of every image, float16 [n, 3, S, S], and which rows have one."""
    tf = bb.build_transform(size)

    def one(ref):
        data, _ = read_image_bytes(ref, image_root, cfg.catalog.max_image_bytes) if isinstance(ref, str) else (None, 0)
        img = None if data is None else decode_image(data, cfg.catalog.max_image_pixels, draft_size=size)[0]
        return None if img is None else tf(img).half()

    with ThreadPoolExecutor(workers) as ex:
        tensors = list(ex.map(one, refs))
    ok = np.array([t is not None for t in tensors])
    blank = torch.zeros(3, size, size, dtype=torch.float16)
    return torch.stack([t if t is not None else blank for t in tensors]), ok


def augment(x: torch.Tensor, gen: torch.Generator, zoom, shift) -> torch.Tensor:
    """Per-item random zoom-in, shift and mirror of a batch, on its device (one ``grid_sample``)."""
    n = x.shape[0]
    r = torch.rand(n, 4, generator=gen, device="cpu").to(x.device)
    s = zoom[0] + (zoom[1] - zoom[0]) * r[:, 0]  # fraction of the side kept
    flip = torch.where(r[:, 1] < 0.5, -1.0, 1.0)
    tx = (r[:, 2] * 2 - 1) * (1 - s + shift)
    ty = (r[:, 3] * 2 - 1) * (1 - s + shift)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = s * flip, s, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


class Tuned(nn.Module):
    def __init__(self, backbone: nn.Module, n_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(bb.EMBED_DIM, n_classes)

    def forward(self, x):
        feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.fc(self.drop(feats))


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def _batch(X: torch.Tensor, idx, device) -> torch.Tensor:
    return X[idx].to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict(net: Tuned, X: torch.Tensor, device, bf16: bool = True, batch: int = 256) -> np.ndarray:
    """Softmax probabilities, mean of the original and the mirrored view, float32 [n, C]."""
    net.eval()
    out = []
    for s in range(0, len(X), batch):
        x = _batch(X, slice(s, s + batch), device)
        with _autocast(device, bf16):
            p = torch.softmax(net(x).float(), 1) + torch.softmax(net(torch.flip(x, dims=[3])).float(), 1)
        out.append((p / 2).cpu())
    return torch.cat(out).numpy()


def fine_tune(backbone: nn.Module, X: torch.Tensor, y: np.ndarray, n_classes: int, device, seed: int,
              recipe: dict, bf16: bool = True) -> tuple[Tuned, dict]:
    """Fit a copy of ``backbone`` + a new head on rows X/y (a training fold); early stopping on a slice of them."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = max(n_classes, int(recipe["val_frac"] * len(y)))
    val, tr = perm[:n_val], perm[n_val:]
    net = Tuned(copy.deepcopy(backbone), n_classes, recipe["dropout"]).to(device).to(memory_format=torch.channels_last)
    head = list(net.fc.parameters())
    body = [p for p in net.parameters() if all(p is not q for q in head)]
    lr, mult = recipe["lr"], recipe["head_lr_mult"]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * mult}], weight_decay=recipe["wd"])
    steps_per_epoch = math.ceil(len(tr) / recipe["batch"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * mult], pct_start=0.15,
                                                total_steps=recipe["epochs"] * steps_per_epoch)
    lossf = nn.CrossEntropyLoss(label_smoothing=recipe["smoothing"])
    yt = torch.from_numpy(y).to(device)
    stop, seen, ep = EarlyStop(recipe["patience"]), 0, 0
    _sync(device)
    t0 = time.perf_counter()
    for ep in range(recipe["epochs"]):
        net.train()
        order = torch.from_numpy(tr[torch.randperm(len(tr), generator=gen).numpy()])
        for s in range(0, len(order), recipe["batch"]):
            b = order[s:s + recipe["batch"]]
            if len(b) < 2:  # BatchNorm needs two
                continue
            x = augment(_batch(X, b, device), gen, recipe["zoom"], recipe["shift"]).contiguous(
                memory_format=torch.channels_last)
            with _autocast(device, bf16):
                loss = lossf(net(x).float(), yt[b.to(device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(b)
        acc = float((predict(net, X[val], device, bf16).argmax(1) == y[val]).mean())
        if stop.step(acc, net):
            break
    _sync(device)
    secs = time.perf_counter() - t0
    stop.restore(net, ep)
    return net, {"seconds": secs, "train_images_per_s": seen / secs, "best_epoch": int(net.best_epoch_) + 1,
                 "val_accuracy": stop.best}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def pooled(backbone: nn.Module, X: torch.Tensor, device, bf16: bool, batch: int = 256) -> tuple[np.ndarray, float]:
    """Pooled frozen features [n, 1280] float32 and the images/s of the forward pass."""
    backbone.eval()
    out = []
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(X), batch):
        with _autocast(device, bf16):
            f = backbone.forward_head(backbone.forward_features(_batch(X, slice(s, s + batch), device)),
                                      pre_logits=True)
        out.append(f.float())
    _sync(device)
    secs = time.perf_counter() - t0
    return torch.cat(out).cpu().numpy(), len(X) / secs


def inner_oof(backbone, X, img, y, groups, fold, C, device, seed, recipe, deadline: float) -> dict:
    """Per outer fold k: 5 inner folds over its training rows, each inner test part predicted by a model
    fitted on the rest (``inner_fold`` [5, n]: -1 on the outer test rows; ``inner_oof`` [5, n, C] float16)."""
    inner_fold = np.full((5, len(y)), -1, np.int64)
    P = np.full((5, len(y), C), np.nan, np.float16)
    for k in range(5):
        tr_all = np.flatnonzero(fold != k)
        inner_fold[k, tr_all] = make_folds(y[tr_all], 5, seed, groups[tr_all])
        for j in range(5):
            if time.perf_counter() > deadline:  # budget spent: the rest stays NaN (not run)
                break
            itr = np.flatnonzero((inner_fold[k] >= 0) & (inner_fold[k] != j) & img)
            ite = np.flatnonzero((inner_fold[k] == j) & img)
            net, info = fine_tune(backbone, X[itr], y[itr], C, device, seed + 10 * k + j, recipe)
            P[k, ite] = predict(net, X[ite], device).astype(np.float16)
            print(f"  inner {k}.{j}: {info['seconds']:.1f} s, best epoch {info['best_epoch']}", flush=True)
    return {"inner_fold": inner_fold, "inner_oof": P}


def _save_probas(folder: Path, level: int, name: str, arrays: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"finetune_L{level}_{name}.npz", **arrays)


def _score(y, P) -> dict:
    pred = P.argmax(1)
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro"))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--levels", default="1,2")
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite2")
    ap.add_argument("--weights", action="append", default=[], help="NAME=PATH: that backbone's ImageNet weights file")
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    ap.add_argument("--limit", type=int, default=0, help="first N catalog rows only (plumbing check)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new (level, backbone) runs after this")
    ap.add_argument("--json", default="", help="write the records here (after every record)")
    ap.add_argument("--probas", default="", help="save the outer-fold probabilities (npz per level) into this folder")
    ap.add_argument("--inner", default="", help="BACKBONE: also its out-of-fold probabilities inside every outer "
                    "training fold (5 inner folds, as a stack's base layer needs), saved with --probas")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    recipe = {**RECIPE, "epochs": args.epochs}
    weights = dict(w.split("=", 1) for w in args.weights)
    cfg = load_config(ROOT / DEMO[0])
    cfg.image.device, cfg.image.runtime = str(device), "torch"
    items = read_catalog(ROOT / DEMO[1], cfg.catalog).items
    if args.limit:
        items = items.iloc[:args.limit]
    names = args.backbones.split(",")
    nets, pix, ok, meta = {}, {}, {}, {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                                       "torch": torch.__version__, "recipe": recipe}
    for name in names:
        c = copy.deepcopy(cfg)
        c.image.backbone, c.image.weights_path = name, weights.get(name)
        size = bb.input_size(c.image)
        t0 = time.perf_counter()
        pix[name], ok[name] = load_pixels(c, items["image"].tolist(), str(ROOT / c.catalog.image_root), size)
        meta[f"decode_s_{name}"] = round(time.perf_counter() - t0, 2)
        nets[name] = bb.load_backbone(c.image).float()
        print(f"{name}: {int(ok[name].sum())} images at {size}px in {meta[f'decode_s_{name}']} s", flush=True)
    agreement = {}
    frozen = {}
    for name in names:
        f32, ips32 = pooled(nets[name], pix[name], device, bf16=False)
        f16, ips16 = pooled(nets[name], pix[name], device, bf16=True)
        o = ok[name]
        cos = (f32[o] * f16[o]).sum(1) / (np.linalg.norm(f32[o], axis=1) * np.linalg.norm(f16[o], axis=1))
        frozen[name] = f32[:, None, :]
        agreement[name] = {"frozen_feature_cosine_min": float(cos.min()), "frozen_feature_cosine_mean": float(cos.mean()),
                           "forward_images_per_s_fp32": round(ips32, 1), "forward_images_per_s_bf16": round(ips16, 1)}
        print(f"{name}: {agreement[name]}", flush=True)
    meta["bf16_vs_fp32"] = agreement
    records, out = [], (ROOT / args.json if args.json else None)
    saved, later = {}, []

    def emit(rec):
        records.append(rec)
        print(json.dumps(rec), flush=True)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n")

    for level in [int(v) for v in args.levels.split(",")]:
        c = copy.deepcopy(cfg)
        c.catalog.label_depth = level
        labels = CatalogClassifier(c).labels_for(items)
        rows = np.flatnonzero(labels.notna().to_numpy())
        classes = sorted(labels.iloc[rows].unique())
        y = labels.iloc[rows].map({n: i for i, n in enumerate(classes)}).to_numpy().astype(np.int64)
        groups = np.array([title_key(t) for t in items["title"].iloc[rows]], dtype=object)
        fold = make_folds(y, 5, cfg.stack.seed, groups)  # the evaluation's outer folds
        C = len(classes)
        base = {"level": level, "n_items": int(len(y)), "n_categories": C}
        tuned_P, val_acc = {}, {}
        for name in names:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"budget reached: level {level} {name} not run", flush=True)
                continue
            img = ok[name][rows]
            Pf = np.full((len(y), C), 1.0 / C)
            Pt = np.full((len(y), C), 1.0 / C)
            fits, agree, va = [], [], np.zeros(5)
            for k in range(5):
                tr, te = np.flatnonzero((fold != k) & img), np.flatnonzero((fold == k) & img)
                Pf[te] = frozen_head(frozen[name][rows], y, tr, te, C, False)
                net, info = fine_tune(nets[name], pix[name][rows[tr]], y[tr], C, device, cfg.stack.seed + k, recipe)
                Pt[te] = predict(net, pix[name][rows[te]], device, bf16=True)
                p32 = predict(net, pix[name][rows[te]], device, bf16=False)
                agree.append(float((p32.argmax(1) == Pt[te].argmax(1)).mean()))
                fits.append(info)
                va[k] = info["val_accuracy"]
                print(f"level {level} {name} fold {k}: {json.dumps(info)}", flush=True)
                del net
            tuned_P[name], val_acc[name] = Pt, va
            emit({**base, "variant": f"frozen_{name}", "backbone": name, **_score(y, Pf)})
            emit({**base, "variant": f"tuned_{name}", "backbone": name, **_score(y, Pt),
                  "fine_tune_seconds_per_fold": float(np.mean([f["seconds"] for f in fits])),
                  "train_images_per_s": float(np.mean([f["train_images_per_s"] for f in fits])),
                  "best_epochs": [f["best_epoch"] for f in fits], "val_slice_accuracy": va.tolist(),
                  "bf16_fp32_argmax_agreement": float(np.mean(agree))})
            if args.probas:
                saved[(level, name)] = dict(ids=items["item_id"].iloc[rows].to_numpy(), fold=fold, y=y,
                                            classes=np.array(classes), tuned=Pt, frozen=Pf)
                later.append((level, name, rows, img, y, groups, fold, C))
                _save_probas(ROOT / args.probas, level, name, saved[(level, name)])
        if len(tuned_P) > 1:  # nested: per outer fold the backbone with the best slice of its own training rows
            chosen = [max(tuned_P, key=lambda n: val_acc[n][k]) for k in range(5)]
            P = np.full((len(y), C), 1.0 / C)
            for k, name in enumerate(chosen):
                P[fold == k] = tuned_P[name][fold == k]
            emit({**base, "variant": "tuned_selected", "chosen_per_fold": chosen, **_score(y, P)})
    for level, name, rows, img, y, groups, fold, C in later:  # after every outer record: the budget goes there first
        if name == args.inner and time.perf_counter() - t_start <= args.budget_s:
            inner = inner_oof(nets[name], pix[name][rows], img, y, groups, fold, C, device, cfg.stack.seed, recipe,
                              deadline=t_start + args.budget_s)
            _save_probas(ROOT / args.probas, level, name, {**saved[(level, name)], **inner})
    meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    if out is not None:
        out.write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n")


if __name__ == "__main__":
    main()
