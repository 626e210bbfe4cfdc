"""Character-level CNN over title + description, trained from scratch.

Characters, not words: listings are spec lists, brand codes, emoji and mixed scripts that
word tokenizers break on. Parallel convolutions of several widths, global max pooling,
dropout, linear softmax layer.

Inference on the CPU runs the fitted net through OpenVINO (``runtime: auto``; about 2.4x torch
eager on the 2-core machine, probabilities equal to torch's within 1e-5): compiled once per
fitted model on the first call that scores a full batch, kept in a private attribute that is
never pickled or saved.
"""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import torch
from torch import nn

from ..features.text import CharVocab
from .base import BaseModel
from .registry import register


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class CharCNN(nn.Module):
    """embed -> parallel convs (widths k) -> max-pool 4 -> conv 3 -> global max -> linear.

    The pooled second layer sees ~20-character windows at a quarter of the cost of
    running wide filters over every position, which matters on a 2-core CPU.
    """

    def __init__(self, vocab_size: int, n_classes: int, embed_dim: int, filters: int,
                 kernel_sizes: tuple[int, ...], dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k, padding=k // 2) for k in kernel_sizes)
        width = filters * len(kernel_sizes)
        self.pool = nn.MaxPool1d(4, ceil_mode=True)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(1).float()  # padding must not win the max-pool
        x = self.embed(ids).transpose(1, 2)
        h = torch.cat([torch.relu(c(x)) for c in self.convs], dim=1) * mask
        h = self.pool(h)
        m2 = self.pool(mask) > 0
        h = torch.relu(self.conv2(h)).masked_fill(~m2, 0.0).amax(dim=2)
        return self.out(self.drop(h))


@register("char_cnn")
class CharCNNClassifier(BaseModel):
    def __init__(self, max_len: int = 384, max_vocab: int = 300, min_char_count: int = 2,
                 embed_dim: int = 32, filters: int = 64, kernel_sizes: tuple[int, ...] = (3, 5),
                 dropout: float = 0.3, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
                 weight_decay: float = 1e-4, device: str = "auto", runtime: str = "auto", seed: int = 0,
                 classes=None):
        # max_vocab: most frequent characters kept, the rest map to <unk>; device: auto | cpu | cuda;
        # runtime (inference only): auto (OpenVINO on the CPU when installed, else torch) | torch | openvino
        self.max_len = max_len
        self.max_vocab = max_vocab
        self.min_char_count = min_char_count
        self.embed_dim = embed_dim
        self.filters = filters
        self.kernel_sizes = kernel_sizes
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.device = device
        self.runtime = runtime
        self.seed = seed
        self.classes = classes

    def _net(self) -> CharCNN:
        return CharCNN(len(self.vocab_), len(self.classes_), self.embed_dim, self.filters,
                       tuple(self.kernel_sizes), self.dropout)

    def fit(self, X, y):
        y = self._encode_labels(y)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        texts = [str(t) for t in X.texts]
        self.vocab_ = CharVocab.build(texts, self.max_vocab, self.min_char_count)
        lengths = np.array([len(t) for t in texts]) if texts else np.array([1])
        # long enough for almost all texts, no longer: short catalogs train much faster
        self.seq_len_ = int(min(self.max_len, max(16, np.percentile(lengths, 98))))
        ids = torch.from_numpy(self.vocab_.encode(texts, self.seq_len_))
        target = torch.from_numpy(np.array(y, dtype=np.int64))
        device = pick_device(self.device)
        self.net_ = self._net().to(device)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        steps = max(1, self.epochs * int(np.ceil(len(texts) / self.batch_size)))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        self.net_.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(order), self.batch_size):
                b = order[start:start + self.batch_size]
                xb, yb = ids[b].to(device), target[b].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = loss_fn(self.net_(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        self.net_.eval().cpu()
        self.__dict__.pop("_compiled", None)  # compiled for the previous fit's weights
        return self

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

            example = torch.ones((2, self.seq_len_), dtype=torch.int64)
            compiled = self._compiled = CompiledModule(self.net_.cpu().eval(), example)
        return compiled

    @torch.inference_mode()
    def predict_proba(self, X, batch_size: int = 256) -> np.ndarray:
        texts = [str(t) for t in X.texts]
        if not texts:
            return np.zeros((0, len(self.classes_)), np.float32)
        ids = torch.from_numpy(self.vocab_.encode(texts, self.seq_len_))
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
        meta = {"classes": self.classes_.tolist(), "seq_len": self.seq_len_, "chars": self.vocab_.chars,
                "torch": torch.__version__}
        (path / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))

    def _load_fitted(self, path):
        meta = json.loads((path / "meta.json").read_text())
        self.classes_, self.seq_len_ = np.array(meta["classes"]), meta["seq_len"]
        self.vocab_ = CharVocab(meta["chars"])
        self.net_ = self._net()
        self.net_.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        self.net_.eval()
