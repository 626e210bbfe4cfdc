"""The char-level text model ("char_cnn"): hashed character n-grams, optionally a char CNN.

Characters, not words: listings are spec lists, brand codes, emoji and mixed scripts that
word tokenizers break on. Each word's character 2-5 grams (with boundary markers), the word
and adjacent word pairs are hashed into buckets (features/ngrams.py), embedded and pooled
(EmbeddingBag, sum / sqrt(n)); ``filters > 0`` adds the parallel-convolution branch over the
raw characters, concatenated before dropout and the linear softmax layer. Default: n-grams
only: out of fold (scripts/text_model_cv.py) the conv branch added no accuracy (Flipkart L1
0.940 vs 0.948 on one split, BigBasket 8k L2 0.701 vs 0.703) at about twice the fit time.
Training: AdamW for the dense layers, sparse Adagrad for the n-gram table (only the rows a
batch touches), one-cycle learning rate over ``epochs``, so a short budget still converges;
an optional stratified early-stopping slice (``val_fraction``) restores the best epoch (off by
default: on 1050 items the held-out 10% cost more than the stop gained, 0.924 vs 0.944).

Inference on the CPU runs the fitted net through OpenVINO (``runtime: auto``; probabilities
equal to torch's within 1e-5): compiled once per fitted model on the first call that scores a
full batch, kept in a private attribute that is never pickled or saved.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import torch
from torch import nn

from ..features.ngrams import NgramHasher
from ..features.text import CharVocab
from .base import BaseModel
from .registry import register


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CharConv(nn.Module):
    """embed -> parallel convs (widths k) -> max-pool 4 -> conv 3 -> global max: ``width`` features.

    The pooled second layer sees ~20-character windows at a quarter of the cost of
    running wide filters over every position, which matters on a 2-core CPU.
    """

    def __init__(self, vocab_size: int, embed_dim: int, filters: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k, padding=k // 2) for k in kernel_sizes)
        self.width = filters * len(kernel_sizes)
        self.pool = nn.MaxPool1d(4, ceil_mode=True)
        self.conv2 = nn.Conv1d(self.width, self.width, 3, padding=1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(1).float()  # padding must not win the max-pool
        x = self.embed(ids).transpose(1, 2)
        h = torch.cat([torch.relu(c(x)) for c in self.convs], dim=1) * mask
        h = self.pool(h)
        m2 = self.pool(mask) > 0
        return torch.relu(self.conv2(h)).masked_fill(~m2, 0.0).amax(dim=2)


class CharCNN(nn.Module):
    """The conv branch alone -> dropout -> linear."""

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, filters: int,
                 kernel_sizes: tuple[int, ...], dropout: float):
        super().__init__()
        self.conv = CharConv(vocab_size, embed_dim, filters, kernel_sizes)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(self.conv.width, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.conv(ids)))


class HybridCharNet(nn.Module):
    """[char ids | hashed n-gram ids] in one int64 row -> conv features ++ pooled n-gram
    embeddings -> dropout -> linear. One input tensor, so OpenVINO compiles it as it does the CNN;
    ``filters=0`` leaves the conv branch out.

    The n-gram pool is the sum over a row's distinct ids divided by sqrt(count): the L2 norm of
    a binary bag (as TF-IDF normalises), so long descriptions do not drown the title the way a
    mean does. Row 0 (padding) stays zero, so the sum needs no mask.
    """

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, filters: int,
                 kernel_sizes: tuple[int, ...], dropout: float, seq_len: int, buckets: int, ngram_dim: int):
        super().__init__()
        self.seq_len = seq_len
        self.conv = CharConv(vocab_size, embed_dim, filters, kernel_sizes) if filters else None
        self.grams = nn.EmbeddingBag(buckets + 1, ngram_dim, mode="sum", padding_idx=0, sparse=True)
        nn.init.uniform_(self.grams.weight, -1.0 / ngram_dim, 1.0 / ngram_dim)
        with torch.no_grad():
            self.grams.weight[0].zero_()
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(ngram_dim + (self.conv.width if self.conv is not None else 0), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grams = x[:, self.seq_len:]
        count = (grams != 0).sum(1, keepdim=True).float().clamp(min=1.0)
        h = self.grams(grams) / count.sqrt()
        if self.conv is not None:
            h = torch.cat([self.conv(x[:, :self.seq_len]), h], dim=1)
        return self.out(self.drop(h))


@register("char_cnn")
class CharCNNClassifier(BaseModel):

    reads = ("texts",)

    def __init__(self, max_len: int = 384, max_vocab: int = 300, min_char_count: int = 2,
                 embed_dim: int = 32, filters: int = 0, kernel_sizes: tuple[int, ...] = (3, 5),
                 buckets: int = 262_144, ngram_dim: int = 64, min_n: int = 2, max_n: int = 5,
                 word_ngrams: int = 2, max_ngrams: int = 512,
                 dropout: float = 0.1, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
                 ngram_lr: float = 0.2, weight_decay: float = 1e-4, label_smoothing: float = 0.05,
                 val_fraction: float = 0.0, patience: int = 2, device: str = "auto", runtime: str = "auto",
                 seed: int = 0, classes=None):
        # max_vocab: most frequent characters kept, the rest map to <unk>; filters=0: no conv branch;
        # buckets / ngram_dim / min_n..max_n / word_ngrams / max_ngrams: the hashed n-gram branch
        # (features/ngrams.py; max_ngrams caps the distinct ids a row keeps); epochs: the most epochs,
        # early stopping on a stratified val_fraction of the rows (0: none) restores the best epoch;
        # device: auto | cpu | cuda; runtime (inference only): auto (OpenVINO on the CPU when
        # installed, else torch) | torch | openvino
        self.max_len = max_len
        self.max_vocab = max_vocab
        self.min_char_count = min_char_count
        self.embed_dim = embed_dim
        self.filters = filters
        self.kernel_sizes = kernel_sizes
        self.buckets = buckets
        self.ngram_dim = ngram_dim
        self.min_n = min_n
        self.max_n = max_n
        self.word_ngrams = word_ngrams
        self.max_ngrams = max_ngrams
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.ngram_lr = ngram_lr
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.val_fraction = val_fraction
        self.patience = patience
        self.device = device
        self.runtime = runtime
        self.seed = seed
        self.classes = classes

    def _net(self) -> HybridCharNet:
        return HybridCharNet(len(self.vocab_), len(self.classes_), self.embed_dim, self.filters,
                             tuple(self.kernel_sizes), self.dropout, self.seq_len_, self.buckets, self.ngram_dim)

    def _hasher(self) -> NgramHasher:
        return NgramHasher(self.buckets, self.min_n, self.max_n, self.word_ngrams)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """One int64 row per text: seq_len_ character ids, then ngram_len_ hashed n-gram ids.
        Without the conv branch (``filters=0``) the net never reads the character ids: they stay 0."""
        chars = (self.vocab_.encode(texts, self.seq_len_) if self.filters
                 else np.zeros((len(texts), self.seq_len_), dtype=np.int64))
        grams = self.hasher_.encode(texts, self.ngram_len_)
        return torch.from_numpy(np.concatenate([chars, grams], axis=1))

    def fit(self, X, y):
        y = self._encode_labels(y)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        texts = [str(t) for t in X.texts]
        self.vocab_ = CharVocab.build(texts, self.max_vocab, self.min_char_count)
        lengths = np.array([len(t) for t in texts]) if texts else np.array([1])
        # long enough for almost all texts, no longer: short catalogs train much faster
        self.seq_len_ = int(min(self.max_len, max(16, np.percentile(lengths, 98))))
        self.hasher_ = self._hasher()
        counts = np.array([len(self.hasher_.row(t)) for t in texts]) if texts else np.array([1])
        self.ngram_len_ = int(min(self.max_ngrams, max(16, np.percentile(counts, 98))))
        ids = self._encode(texts)
        target = torch.from_numpy(np.array(y, dtype=np.int64))
        train, val = _stratified_split(y, self.val_fraction, rng)
        device = pick_device(self.device)
        self.net_ = self._net().to(device)
        dense = [p for n, p in self.net_.named_parameters() if not n.startswith("grams.")]
        opts = [torch.optim.AdamW(dense, lr=self.lr, weight_decay=self.weight_decay),
                torch.optim.Adagrad(self.net_.grams.parameters(), lr=self.ngram_lr)]  # sparse rows
        steps = max(1, self.epochs * int(np.ceil(len(train) / self.batch_size)))
        scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=o.param_groups[0]["lr"], total_steps=steps,
                                                      cycle_momentum=False) for o in opts]
        loss_fn = nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)
        best, best_state, since = None, None, 0
        self.epochs_run_ = 0
        for epoch in range(self.epochs):
            self.net_.train()
            order = train[rng.permutation(len(train))]
            for start in range(0, len(order), self.batch_size):
                b = order[start:start + self.batch_size]
                xb, yb = ids[b].to(device), target[b].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = loss_fn(self.net_(xb), yb)
                for o in opts:
                    o.zero_grad(set_to_none=True)
                loss.backward()
                for o, s in zip(opts, scheds):
                    o.step()
                    s.step()
            self.epochs_run_ = epoch + 1
            if not len(val):
                continue
            score = self._val_score(ids[val], target[val], device)
            if best is None or score > best:
                best, since = score, 0
                best_state = {k: v.detach().clone() for k, v in self.net_.state_dict().items()}
            else:
                since += 1
                if since >= self.patience:
                    break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.best_val_ = best
        self.net_.eval().cpu()
        self.__dict__.pop("_compiled", None)  # compiled for the previous fit's weights
        return self

    @torch.inference_mode()
    def _val_score(self, xv: torch.Tensor, yv: torch.Tensor, device) -> tuple[float, float]:
        """(accuracy, -cross-entropy) on the early-stopping rows: accuracy first, loss breaks ties."""
        self.net_.eval()
        logits = torch.cat([self.net_(xv[s:s + 512].to(device)).float() for s in range(0, len(xv), 512)])
        yv = yv.to(logits.device)
        acc = (logits.argmax(1) == yv).float().mean().item()
        return acc, -nn.functional.cross_entropy(logits, yv).item()

    def _use_openvino(self, device: torch.device, rows: int, batch_size: int) -> bool:
        """``auto``: OpenVINO on the CPU once a call scores a full batch (a nightly chunk): compiling
        takes about a second, more than torch needs for a few hundred rows (e.g. a training fold)."""
        if self.runtime not in ("auto", "torch", "openvino"):
            raise ValueError(f"char_cnn runtime must be auto, torch or openvino, got {self.runtime!r}")
        if self.runtime == "torch" or device.type != "cpu":
            return False
        if self.runtime == "openvino" or "_compiled" in self.__dict__:
            return True
        return rows >= batch_size and importlib.util.find_spec("openvino") is not None

    def _forward(self, device: torch.device, rows: int, batch_size: int):
        """The fitted net's logits function: OpenVINO compiled once per fit (lazily), or torch."""
        if not self._use_openvino(device, rows, batch_size):
            net = self.net_.to(device)
            return lambda xb: net(xb.to(device)).float()
        compiled = self.__dict__.get("_compiled")
        if compiled is None:
            from ..features.openvino_cpu import CompiledModule

            example = torch.ones((2, self.seq_len_ + self.ngram_len_), dtype=torch.int64)
            compiled = self._compiled = CompiledModule(self.net_.cpu().eval(), example)
        return compiled

    @torch.inference_mode()
    def predict_proba(self, X, batch_size: int = 256) -> np.ndarray:
        texts = [str(t) for t in X.texts]
        if not texts:
            return np.zeros((0, len(self.classes_)), np.float32)
        ids = self._encode(texts)
        device = pick_device(self.device)
        forward = self._forward(device, len(texts), batch_size)
        out = [torch.softmax(forward(ids[s:s + batch_size]), dim=1).cpu().numpy()
               for s in range(0, len(texts), batch_size)]
        self.net_.cpu()
        return np.concatenate(out).astype(np.float32)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_compiled", None)  # an OpenVINO handle: recompiled on first use after unpickling
        return state

    def _save_fitted(self, path):
        torch.save(self.net_.state_dict(), path / "weights.pt")
        meta = {"classes": self.classes_.tolist(), "seq_len": self.seq_len_, "ngram_len": self.ngram_len_,
                "chars": self.vocab_.chars, "torch": torch.__version__}
        (path / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))

    def _load_fitted(self, path):
        meta = json.loads((path / "meta.json").read_text())
        self.classes_, self.seq_len_ = np.array(meta["classes"]), meta["seq_len"]
        self.ngram_len_ = meta["ngram_len"]
        self.vocab_ = CharVocab(meta["chars"])
        self.hasher_ = self._hasher()  # the hash settings are parameters (params.json)
        self.net_ = self._net()
        self.net_.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        self.net_.eval()


def _stratified_split(y: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, early-stopping rows): about ``fraction`` of each class held out, never a
    class's last training row; ``fraction`` 0 holds out nothing."""
    val = []
    if fraction > 0:
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            val.append(rows[:min(int(round(fraction * len(rows))), len(rows) - 1)])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(y)), val), val

