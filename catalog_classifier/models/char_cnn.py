"""Character-level CNN over title + description, trained from scratch.

Characters, not words: listings are spec lists, brand codes, emoji and mixed scripts that
word tokenizers break on. Parallel convolutions of several widths, global max pooling,
dropout, linear softmax layer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..features.text import CharVocab
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


class CharCNNClassifier:
    def __init__(self, text_cfg, seed: int = 0):
        self.cfg = text_cfg
        self.seed = seed

    def _hparams(self) -> dict:
        c = self.cfg
        return {"embed_dim": c.embed_dim, "filters": c.filters, "kernel_sizes": list(c.kernel_sizes),
                "dropout": c.dropout}

    def fit(self, X, y, n_classes: int):
        c = self.cfg
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        texts = [str(t) for t in X.texts]
        self.n_classes_ = n_classes
        self.vocab_ = CharVocab.build(texts, c.max_vocab, c.min_char_count)
        lengths = np.array([len(t) for t in texts]) if texts else np.array([1])
        # long enough for almost all texts, no longer: short catalogs train much faster
        self.seq_len_ = int(min(c.max_len, max(16, np.percentile(lengths, 98))))
        ids = torch.from_numpy(self.vocab_.encode(texts, self.seq_len_))
        target = torch.from_numpy(np.array(y, dtype=np.int64))
        device = pick_device(c.device)
        self.net_ = CharCNN(len(self.vocab_), n_classes, **self._hparams()).to(device)
        opt = torch.optim.AdamW(self.net_.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        steps = max(1, c.epochs * int(np.ceil(len(texts) / c.batch_size)))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c.lr, total_steps=steps)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
        self.net_.train()
        for _ in range(c.epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(order), c.batch_size):
                b = order[start:start + c.batch_size]
                xb, yb = ids[b].to(device), target[b].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = loss_fn(self.net_(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        self.net_.eval().cpu()
        return self

    @torch.inference_mode()
    def predict_proba(self, X, batch_size: int = 256) -> np.ndarray:
        texts = [str(t) for t in X.texts]
        ids = torch.from_numpy(self.vocab_.encode(texts, self.seq_len_))
        device = pick_device(self.cfg.device)
        net = self.net_.to(device)
        out = []
        for start in range(0, len(texts), batch_size):
            xb = ids[start:start + batch_size].to(device)
            out.append(torch.softmax(net(xb).float(), dim=1).cpu().numpy())
        net.cpu()
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.n_classes_), np.float32)

    def save(self, path):
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.net_.state_dict(), path / "weights.pt")
        meta = {"n_classes": self.n_classes_, "seq_len": self.seq_len_, "chars": self.vocab_.chars,
                "hparams": self._hparams(), "text_cfg": {k: (list(v) if isinstance(v, tuple) else v)
                                                        for k, v in vars(self.cfg).items()},
                "torch": torch.__version__}
        (path / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))

    @classmethod
    def load(cls, path):
        from ..config import TextConfig

        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        cfg = TextConfig(**{k: (tuple(v) if k == "kernel_sizes" else v) for k, v in meta["text_cfg"].items()})
        self = cls(cfg)
        self.n_classes_, self.seq_len_ = meta["n_classes"], meta["seq_len"]
        self.vocab_ = CharVocab(meta["chars"])
        hp = meta["hparams"]
        self.net_ = CharCNN(len(self.vocab_), self.n_classes_, hp["embed_dim"], hp["filters"],
                            tuple(hp["kernel_sizes"]), hp["dropout"])
        self.net_.load_state_dict(torch.load(path / "weights.pt", weights_only=True))
        self.net_.eval()
        return self


@register("char_cnn")
def _build(config):
    return lambda: CharCNNClassifier(config.text, seed=config.stack.seed)
