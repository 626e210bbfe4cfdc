"""Quick CV: tune the last MBConv block(s) + conv_head + a linear head on cached trunk activations,
against the frozen head (softmax over pooled frozen features), on the SAME folds as the evaluation.

Activations of the frozen trunk at the input of ``blocks[5][1]`` (EfficientNet-Lite: 7x7, 192 or
more channels; the input of the last 3 blocks of stage 5 and the single block of stage 6) are
computed once per image and per horizontal flip with torch eager fp32 and cached float16 under
``.cache/image_tune/`` keyed by backbone identity (arch, weights sha, input size, preprocessing),
cut point and precision. Deeper cuts are computed from that one with the frozen blocks.

Variants (``--variants``), each scored by out-of-fold accuracy / macro-F1 on the held-out fold:
  frozen        StandardScaler + LogisticRegression(C=1) on pooled frozen features (= image_head)
  frozen_flip   the same, trained on originals + flips, TTA: mean of both views' probabilities
  frozen_multi  pooled features of every block from the cut on + conv_head, concatenated (_flip: + flips)
  frozen_product  the frozen head on the product's own cached embeddings (image.runtime auto), e.g.
                with --backbone efficientnet_lite2 (a comma list: the embeddings concatenated; name@size
                sets image.image_size, e.g. efficientnet_lite2@300). --settings "a;b@300;c,d" scores each
                setting in turn (embedded first, in one process, timed side by side); --C-rule inner
                also picks the head's C by an inner grouped CV on each training fold (never the test fold)
  loraR         conv_head with a trainable rank-R 1x1 update + bn2 gamma/beta + linear head (flips, TTA);
                --warm-start: the head starts from the frozen head's solution (epoch 0 = frozen head)
  tune1         block 6.0 + conv_head + bn2 trainable (+ dropout + linear head), flips as augmentation
  tune2 / tune4 the last 2 / 4 blocks (+ conv_head, bn2)
  head_only     conv_head + bn2 + linear head (the previous attempt)

    CATALOG_CLASSIFIER_THREADS=1 .venv/bin/python scripts/image_tune_cv.py --levels 1,2 \
        --variants frozen,frozen_flip,tune1 --json reports/image_tuning_cv.json
    CATALOG_CLASSIFIER_THREADS=1 .venv/bin/python scripts/image_tune_cv.py --variants frozen_product \
        --C-rule fixed,inner --retime --settings "efficientnet_lite0;efficientnet_lite2@300;efficientnet_lite1@280" \
        --json reports/image_backbone_cv.json
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_classifier.catalog import read_catalog  # noqa: E402
from catalog_classifier.catalog.cleaning import title_key  # noqa: E402
from catalog_classifier.classifier import CatalogClassifier  # noqa: E402
from catalog_classifier.config import load_config  # noqa: E402
from catalog_classifier.features import backbone as bb  # noqa: E402
from catalog_classifier.features.images import decode_image, read_image_bytes  # noqa: E402
from stacking.folds import make_folds  # noqa: E402

DEMO = ("data/flipkart1050/catalog.yaml", "data/flipkart1050/flipkart_com-ecommerce_sample_1050.csv")
CUT = (5, 1)  # activations cached at the input of blocks[5][1]
VERBOSE = False  # --verbose: per-epoch accuracy on the early-stopping slice


def _blocks_after(model: nn.Module, cut=CUT) -> list[nn.Module]:
    out = []
    for s, stage in enumerate(model.blocks):
        for j, blk in enumerate(stage):
            if (s, j) >= cut:
                out.append(blk)
    return out


def _trunk_to_cut(model: nn.Module, x: torch.Tensor, cut=CUT) -> torch.Tensor:
    x = model.bn1(model.conv_stem(x))
    for s, stage in enumerate(model.blocks):
        for j, blk in enumerate(stage):
            if (s, j) >= cut:
                return x
            x = blk(x)
    return x


def activations(cfg, refs: list, image_root: str, batch: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(acts [n, 2, C, 7, 7] float16 (original, flip), ok [n], pooled frozen feats [n, 2, 1280])."""
    key = f"{bb.backbone_key(cfg.image)}|cut={CUT}|torch-fp32"
    digests, tensors = [], []
    tf = bb.build_transform(bb.input_size(cfg.image))
    for ref in refs:
        data, _ = read_image_bytes(ref, image_root, cfg.catalog.max_image_bytes) if isinstance(ref, str) else (None, 0)
        img = None if data is None else decode_image(data, cfg.catalog.max_image_pixels,
                                                     draft_size=bb.input_size(cfg.image))[0]
        digests.append(None if img is None else hashlib.sha256(data).hexdigest())
        tensors.append(None if img is None else tf(img))
    ok = np.array([t is not None for t in tensors])
    h = hashlib.sha256((key + "".join(d or "-" for d in digests)).encode()).hexdigest()[:16]
    path = ROOT / ".cache" / "image_tune" / f"{h}.npz"
    if path.exists():
        z = np.load(path)
        return z["acts"], z["ok"], z["pooled"]
    model = bb.load_backbone(cfg.image)
    tail = _blocks_after(model)
    idx = np.flatnonzero(ok)
    acts, pooled = None, np.full((len(refs), 2, bb.EMBED_DIM), np.nan, np.float32)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            rows = idx[s:s + batch]
            x = torch.stack([tensors[i] for i in rows])
            for v, xv in enumerate((x, torch.flip(x, dims=[3]))):
                a = _trunk_to_cut(model, xv)
                if acts is None:
                    acts = np.zeros((len(refs), 2, *a.shape[1:]), np.float16)
                acts[rows, v] = a.numpy().astype(np.float16)
                f = a
                for blk in tail:
                    f = blk(f)
                pooled[rows, v] = model.forward_head(model.bn2(model.conv_head(f)), pre_logits=True).numpy()
    print(f"activations: {len(idx)} images x 2 views in {time.perf_counter() - t0:.1f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, acts=acts, ok=ok, pooled=pooled, key=key)
    return acts, ok, pooled


class Tail(nn.Module):
    def __init__(self, model: nn.Module, n_blocks: int, n_classes: int, dropout: float):
        super().__init__()
        tail = _blocks_after(model)
        self.frozen = nn.Sequential(*copy.deepcopy(tail[:len(tail) - n_blocks]))
        self.train_blocks = nn.Sequential(*copy.deepcopy(tail[len(tail) - n_blocks:])) if n_blocks else nn.Identity()
        self.conv_head = copy.deepcopy(model.conv_head)
        self.bn2 = copy.deepcopy(model.bn2)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(bb.EMBED_DIM, n_classes)
        for p in self.frozen.parameters():
            p.requires_grad_(False)

    def features(self, x):
        return self.bn2(self.conv_head(self.train_blocks(x))).mean((2, 3))

    def forward(self, x):
        return self.fc(self.drop(self.features(x)))



class EarlyStop:
    """Keep the best weights on the validation slice; stop after ``patience`` epochs without gain."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.bad = patience, -1.0, None, 0

    def keep(self, acc: float, net) -> None:
        self.best, self.state, self.bad = acc, copy.deepcopy(net.state_dict()), 0

    def step(self, acc: float, net) -> bool:
        """True when training should stop."""
        if acc > self.best + 1e-9:
            self.keep(acc, net)
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, net, ep: int):
        net.load_state_dict(self.state)
        net.best_epoch_ = ep - self.bad
        return net

def fit_tail(backbone, A, y, n_classes, n_blocks, epochs, lr, wd, smoothing, dropout, bn_train, seed,
             batch=32, patience=4, val_frac=0.12):
    """A: [n, 2, C, 7, 7] float16 training activations (both views). Returns the fitted module."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(y)
    # early stopping on a stratified-ish random slice of the training fold
    perm = rng.permutation(n)
    n_val = max(n_classes, int(val_frac * n))
    val, tr = perm[:n_val], perm[n_val:]
    net = Tail(backbone, n_blocks, n_classes, dropout)
    with torch.no_grad():  # frozen part of the tail once
        Af = torch.from_numpy(A.astype(np.float32))
        Af = torch.stack([net.frozen(Af[:, v]) for v in range(2)], 1)
    # init the linear head from ridge-ish LR on frozen pooled features: faster, steadier start
    params = [p for p in net.parameters() if p.requires_grad]
    head = list(net.fc.parameters())
    body = [p for p in params if all(p is not q for q in head)]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * 10}], weight_decay=wd)
    steps = epochs * math.ceil(2 * len(tr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * 10], total_steps=steps, pct_start=0.1)
    lossf = nn.CrossEntropyLoss(label_smoothing=smoothing)
    yt = torch.from_numpy(y)
    stop = EarlyStop(patience)
    Xtr = torch.cat([Af[tr, 0], Af[tr, 1]])
    ytr = torch.cat([yt[tr], yt[tr]])
    for ep in range(epochs):
        net.train()
        if not bn_train:
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        order = torch.randperm(len(ytr), generator=g)
        for s in range(0, len(order), batch):
            b = order[s:s + batch]
            opt.zero_grad()
            lossf(net(Xtr[b]), ytr[b]).backward()
            opt.step()
            sched.step()
        if stop.step((predict_tail(net, Af[val]).argmax(1) == y[val]).mean(), net):
            break
    return stop.restore(net, ep), Af


@torch.inference_mode()
def predict_tail(net, Af, tta=True):
    """Af: [n, 2, C, 7, 7] float32 activations after the frozen part of the tail."""
    net.eval()
    out = []
    for s in range(0, len(Af), 128):
        p = torch.softmax(net(Af[s:s + 128, 0]), 1)
        if tta:
            p = (p + torch.softmax(net(Af[s:s + 128, 1]), 1)) / 2
        out.append(p)
    return torch.cat(out).numpy()


def frozen_head(F, y, tr, te, n_classes, flip, C=1.0):
    Xtr = np.concatenate([F[tr, 0], F[tr, 1]]) if flip else F[tr, 0]
    ytr = np.concatenate([y[tr], y[tr]]) if flip else y[tr]
    m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=300, random_state=0)).fit(Xtr, ytr)
    cols = m.classes_
    out = np.zeros((len(te), n_classes))
    p = m.predict_proba(F[te, 0])
    if flip:
        p = (p + m.predict_proba(F[te, 1])) / 2
    out[:, cols] = p
    return out


def inner_C(F, y, groups, tr, grid, seed, n_inner=3) -> float:
    """The C of the grid with the best inner-CV accuracy of the frozen head, on training rows ``tr`` only
    (grouped, stratified folds as the evaluation's; ties: the smaller C)."""
    inner = make_folds(y[tr], n_inner, seed, groups[tr])
    n_classes = int(y.max()) + 1
    acc = []
    for C in grid:
        hits = 0
        for j in range(n_inner):
            itr, ite = tr[inner != j], tr[inner == j]
            hits += (frozen_head(F, y, itr, ite, n_classes, False, C).argmax(1) == y[ite]).sum()
        acc.append(hits / len(tr))
    return float(grid[int(np.argmax(acc))])


def parse_spec(spec: str) -> list[tuple[str, int | None]]:
    """'efficientnet_lite0,efficientnet_lite2@300' -> [(lite0, None), (lite2, 300)] (None: the backbone's own)."""
    out = []
    for part in spec.split(","):
        name, _, size = part.partition("@")
        out.append((name, int(size) if size else None))
    return out


def product_embeddings(cfg, spec: str, items, image_root: str, cache: bool = True) -> dict:
    """The product's embeddings (image.runtime auto, its cache unless ``cache`` is False) of one setting,
    concatenated over its backbones, with the seconds spent embedding (model load / export excluded: it
    is loaded first) and the images computed (not served from the cache)."""
    embs, secs, computed = [], 0.0, 0
    for name, size in parse_spec(spec):
        c = copy.deepcopy(cfg)
        c.image.backbone, c.image.image_size = name, size
        if not cache:
            c.image.cache_dir = ""
        clf = CatalogClassifier(c)
        _ = clf._embedder(image_root).model
        t0 = time.perf_counter()
        vec, _ = clf.embed_images(items, image_root)
        secs += time.perf_counter() - t0
        computed += clf.last_embedding_stats_["computed"]
        embs.append(vec)
    return {"X": np.concatenate(embs, 1)[:, None, :], "embed_seconds": secs, "n_computed": computed}


def multi_pooled(backbone, acts):
    """Pooled features of every depth from the cut on: [n, 2, C_cut + sum(block widths) + 1280]."""
    tail = _blocks_after(backbone)
    out = []
    with torch.inference_mode():
        for s in range(0, len(acts), 64):
            views = []
            for v in range(2):
                x = torch.from_numpy(acts[s:s + 64, v].astype(np.float32))
                feats = [x.mean((2, 3))]
                for blk in tail:
                    x = blk(x)
                    feats.append(x.mean((2, 3)))
                feats.append(backbone.bn2(backbone.conv_head(x)).mean((2, 3)))
                views.append(torch.cat(feats, 1))
            out.append(torch.stack(views, 1))
    return torch.cat(out).numpy()


def head_inputs(backbone, acts):
    """(x: block 6.0 output [n, 2, 320, 7, 7] f16, h: frozen conv_head output [n, 2, 1280, 7, 7] f16)."""
    tail = _blocks_after(backbone)
    xs, hs = [], []
    with torch.inference_mode():
        for s in range(0, len(acts), 64):
            xv, hv = [], []
            for v in range(2):
                x = torch.from_numpy(acts[s:s + 64, v].astype(np.float32))
                for blk in tail:
                    x = blk(x)
                xv.append(x.half())
                hv.append(backbone.conv_head(x).half())
            xs.append(torch.stack(xv, 1))
            hs.append(torch.stack(hv, 1))
    return torch.cat(xs), torch.cat(hs)


class LoraHead(nn.Module):
    """conv_head + a trainable low-rank 1x1 update (B A), bn2 with trainable affine (running stats
    frozen), ReLU6 (in bn2), global average pool, dropout, linear classifier."""

    def __init__(self, backbone, rank, n_classes, dropout):
        super().__init__()
        cin, cout = backbone.conv_head.in_channels, backbone.conv_head.out_channels
        self.A = nn.Conv2d(cin, rank, 1, bias=False)
        self.B = nn.Conv2d(rank, cout, 1, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.bn2 = copy.deepcopy(backbone.bn2)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cout, n_classes)

    def forward(self, x, h):
        self.bn2.eval()  # running statistics stay ImageNet's; gamma / beta are trained
        z = self.bn2(h + self.B(self.A(x)))
        return self.fc(self.drop(z.mean((2, 3))))


def fit_lora(backbone, X, H, y, n_classes, rank, epochs, lr, wd, smoothing, dropout, seed, batch=32,
             patience=5, val_frac=0.12, warm_start=False, head_mult=10.0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = max(n_classes, int(val_frac * len(y)))
    val, tr = torch.from_numpy(perm[:n_val]), torch.from_numpy(perm[n_val:])
    net = LoraHead(backbone, rank, n_classes, dropout)
    if warm_start:  # start from the frozen head's solution (LR on standardized pooled features, scaler folded in)
        with torch.no_grad():
            F0 = torch.cat([net.bn2(H[tr[s:s + 128], 0].float()).mean((2, 3))
                            for s in range(0, len(tr), 128)]).numpy()
        ytr = y[tr.numpy()]
        sc = StandardScaler().fit(F0)
        lr0 = LogisticRegression(C=1.0, max_iter=300, random_state=0).fit(sc.transform(F0), ytr)
        W = np.zeros((n_classes, F0.shape[1]))
        b = np.full(n_classes, -30.0)  # a class absent from the fold's training part stays unlikely
        if n_classes == 2 or lr0.coef_.shape[0] == 1:
            raise ValueError("binary warm start not supported")
        W[lr0.classes_] = lr0.coef_ / sc.scale_
        b[lr0.classes_] = lr0.intercept_ - (lr0.coef_ * (sc.mean_ / sc.scale_)).sum(1)
        with torch.no_grad():
            net.fc.weight.copy_(torch.from_numpy(W).float())
            net.fc.bias.copy_(torch.from_numpy(b).float())
    head = list(net.fc.parameters())
    body = [p for p in net.parameters() if all(p is not q for q in head)]
    opt = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": lr * head_mult}], weight_decay=wd)
    steps = epochs * math.ceil(2 * len(tr) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * head_mult], total_steps=steps, pct_start=0.1)
    lossf = nn.CrossEntropyLoss(label_smoothing=smoothing)
    yt = torch.from_numpy(y)
    pairs = torch.cat([torch.stack([tr, torch.zeros_like(tr)], 1), torch.stack([tr, torch.ones_like(tr)], 1)])
    stop, ep = EarlyStop(patience), 0
    if warm_start:  # epoch 0: the frozen head itself, kept unless tuning beats it on the slice
        stop.keep((predict_lora(net, X[val], H[val]).argmax(1) == y[val.numpy()]).mean(), net)
        if VERBOSE:
            print(f"    epoch 0: val acc {stop.best:.3f}", flush=True)
    for ep in range(epochs):
        net.train()
        order = pairs[torch.randperm(len(pairs), generator=g)]
        for s in range(0, len(order), batch):
            i, v = order[s:s + batch, 0], order[s:s + batch, 1]
            opt.zero_grad()
            lossf(net(X[i, v].float(), H[i, v].float()), yt[i]).backward()
            opt.step()
            sched.step()
        acc = (predict_lora(net, X[val], H[val]).argmax(1) == y[val.numpy()]).mean()
        if VERBOSE:
            print(f"    epoch {ep + 1}: val acc {acc:.3f}", flush=True)
        if stop.step(acc, net):
            break
    return stop.restore(net, ep)


@torch.inference_mode()
def predict_lora(net, X, H):
    net.eval()
    out = []
    for s in range(0, len(X), 128):
        p = sum(torch.softmax(net(X[s:s + 128, v].float(), H[s:s + 128, v].float()), 1) for v in range(2)) / 2
        out.append(p)
    return torch.cat(out).numpy()


VARIANTS = {"tune1": 1, "tune2": 2, "tune4": 4, "head_only": 0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=DEMO[0])
    ap.add_argument("--csv", default=DEMO[1])
    ap.add_argument("--levels", default="1,2")
    ap.add_argument("--variants", default="frozen,frozen_flip,tune1")
    ap.add_argument("--backbone", default="")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--bn-train", action="store_true")
    ap.add_argument("--head-lr-mult", type=float, default=10.0, help="lora: the linear head's LR / the body's")
    ap.add_argument("--warm-start", action="store_true", help="lora: start from the frozen head's LR solution")
    ap.add_argument("--settings", default="", help="frozen_product: ';'-separated --backbone specs, each scored")
    ap.add_argument("--C-rule", default="fixed", help="frozen_product: fixed (C=--C) | inner | fixed,inner")
    ap.add_argument("--C", type=float, default=1.0, help="the fixed rule's C (image_head's default: 1)")
    ap.add_argument("--C-grid", default="0.01,0.03,0.1,0.3,1", help="the inner rule's candidates")
    ap.add_argument("--retime", action="store_true",
                    help="re-embed the first setting without the cache at the end (timing drift check)")
    ap.add_argument("--folds-only", default="", help="comma list of fold ids to run (quick look)")
    ap.add_argument("--json", default="", help="append the records to this JSON list")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    global VERBOSE
    VERBOSE = args.verbose
    torch.set_num_threads(int(os.environ.get("CATALOG_CLASSIFIER_THREADS", "1")))
    cfg = load_config(ROOT / args.config)
    if args.backbone:
        cfg.image.backbone, cfg.image.image_size = parse_spec(args.backbone)[0]
    variants = args.variants.split(",")
    settings = args.settings.split(";") if args.settings else [args.backbone or cfg.image.backbone]
    products = {}
    if "frozen_product" in variants:  # the product's own embeddings (runtime auto: OpenVINO), no flips
        prod_items = read_catalog(ROOT / args.csv, cfg.catalog).items
        for spec in settings:  # embedded one after another in this process: the seconds compare
            products[spec] = product_embeddings(cfg, spec, prod_items, str(ROOT / cfg.catalog.image_root))
            print(f"embeddings {spec}: {products[spec]['n_computed']} computed in "
                  f"{products[spec]['embed_seconds']:.1f} s", flush=True)
        if args.retime:
            again = product_embeddings(cfg, settings[0], prod_items, str(ROOT / cfg.catalog.image_root), cache=False)
            products[settings[0]]["embed_seconds_repeat"] = again["embed_seconds"]
            print(f"embeddings {settings[0]} again, no cache: {again['embed_seconds']:.1f} s", flush=True)
    cfg.image.runtime, cfg.image.device = "torch", "cpu"
    items = read_catalog(ROOT / args.csv, cfg.catalog).items
    if variants == ["frozen_product"]:
        acts, ok, pooled, backbone = None, None, None, None
    else:
        acts, ok, pooled = activations(cfg, items["image"].tolist(), str(ROOT / cfg.catalog.image_root))
        backbone = bb.load_backbone(cfg.image)
    multi = multi_pooled(backbone, acts) if any(v.startswith("frozen_multi") for v in args.variants.split(",")) else None
    XH = head_inputs(backbone, acts) if any(v.startswith("lora") for v in args.variants.split(",")) else None
    results = []
    path = ROOT / args.json if args.json else None
    old = json.loads(path.read_text()) if path is not None and path.exists() else []
    run = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # records of one run: their seconds compare
    for level in [int(v) for v in args.levels.split(",")]:
        c = copy.deepcopy(cfg)
        c.catalog.label_depth = level
        labels = CatalogClassifier(c).labels_for(items)
        keep = labels.notna().to_numpy()
        names = sorted(labels[keep].unique())
        y_all = labels.map({n: i for i, n in enumerate(names)}).to_numpy()
        rows = np.flatnonzero(keep)
        y = y_all[rows].astype(np.int64)
        groups = np.array([title_key(t) for t in items["title"].iloc[rows]], dtype=object)
        fold = make_folds(y, 5, cfg.stack.seed, groups)  # the evaluation's outer folds
        C = len(names)
        runs = [(v, None, None) for v in variants if v != "frozen_product"]
        if "frozen_product" in variants:
            runs += [("frozen_product", spec, rule) for spec in settings for rule in args.C_rule.split(",")]
        for var, spec, rule in runs:
            product = None if spec is None else products[spec]["X"]
            img_ok = (ok if spec is None else ~np.isnan(product[:, 0]).any(1))[rows]
            P = np.full((len(y), C), 1.0 / C)
            secs, epochs, chosen = [], [], []
            for k in range(5):
                if args.folds_only and str(k) not in args.folds_only.split(","):
                    continue
                tr = np.flatnonzero((fold != k) & img_ok)
                te = np.flatnonzero((fold == k) & img_ok)
                t0 = time.perf_counter()
                if var == "frozen_product":
                    c_k = args.C if rule == "fixed" else inner_C(
                        product[rows], y, groups, tr, [float(v) for v in args.C_grid.split(",")], cfg.stack.seed + k)
                    chosen.append(c_k)
                    P[te] = frozen_head(product[rows], y, tr, te, C, False, c_k)
                elif var.startswith("frozen_multi"):
                    P[te] = frozen_head(multi[rows], y, tr, te, C, var.endswith("flip"))
                elif var.startswith("lora"):
                    Xr, Hr = XH[0][rows], XH[1][rows]
                    net = fit_lora(backbone, Xr[tr], Hr[tr], y[tr], C, int(var[4:] or 16), args.epochs, args.lr,
                                   args.wd, args.smoothing, args.dropout, cfg.stack.seed + k,
                                   warm_start=args.warm_start, head_mult=args.head_lr_mult)
                    P[te] = predict_lora(net, Xr[te], Hr[te])
                    epochs.append(int(net.best_epoch_) + 1)
                elif var.startswith("frozen"):
                    P[te] = frozen_head(pooled[rows], y, tr, te, C, var == "frozen_flip")
                else:
                    net, _ = fit_tail(backbone, acts[rows[tr]], y[tr], C, VARIANTS[var], args.epochs, args.lr,
                                      args.wd, args.smoothing, args.dropout, args.bn_train, cfg.stack.seed + k)
                    with torch.no_grad():
                        At = torch.from_numpy(acts[rows[te]].astype(np.float32))
                        At = torch.stack([net.frozen(At[:, v]) for v in range(2)], 1)
                    P[te] = predict_tail(net, At)
                    epochs.append(int(net.best_epoch_) + 1)
                secs.append(time.perf_counter() - t0)
            sel = np.isin(fold, [int(f) for f in args.folds_only.split(",")]) if args.folds_only else np.ones(len(y), bool)
            pred = P[sel].argmax(1)
            rec = {"level": level, "variant": var, "backbone": spec or args.backbone or cfg.image.backbone,
                   "accuracy": float(accuracy_score(y[sel], pred)),
                   "macro_f1": float(f1_score(y[sel], pred, average="macro")),
                   "n_items": int(sel.sum()), "n_categories": C, "seconds_per_fold": float(np.mean(secs)),
                   "best_epochs": epochs,
                   "params": None if var.startswith("frozen") else {
                       k: getattr(args, k) for k in ("epochs", "lr", "wd", "smoothing", "dropout", "bn_train", "warm_start", "head_lr_mult")}}
            if spec is not None:
                rec.update({"image_size": [size or bb.BACKBONES[name].input_size for name, size in parse_spec(spec)],
                            "C_rule": rule if rule == "inner" else f"fixed C={args.C}",
                            "C_grid": args.C_grid if rule == "inner" else None, "C_per_fold": chosen, "run": run,
                            **{k: v for k, v in products[spec].items() if k != "X"}})
            results.append(rec)
            print(json.dumps(rec), flush=True)
            if args.json:  # after every record: a long run stopped early keeps what it measured
                path.write_text(json.dumps(old + results, indent=2) + "\n")


if __name__ == "__main__":
    main()
