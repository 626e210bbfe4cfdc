"""A set of keyword rules: load a folder, check it against a model's labels, apply it to items.

Of the rules that match an item, the highest ``priority`` wins; ties go to the earlier rule
(files in name order, then position in the file).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

from ..catalog.schema import CATEGORY_SEP
from .loading import FORMAT_VERSION, OUTPUT_COLUMNS, Rule, RuleError, parse_file, parse_rule
from .matching import field_texts, match_rule, predicted_labels


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    # ---- loading and storing -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "RuleSet":
        """Load one YAML file, or every *.yaml / *.yml file of a directory in name order."""
        p = Path(path)
        if p.is_dir():
            files = sorted([*p.glob("*.yaml"), *p.glob("*.yml")], key=lambda f: f.name)
        elif p.is_file():
            files = [p]
        else:
            raise FileNotFoundError(f"rules path not found: {p}")
        rules: list[Rule] = []
        for f in files:
            rules.extend(parse_file(f))
        return cls._checked(rules)

    @classmethod
    def _checked(cls, rules: list[Rule]) -> "RuleSet":
        seen: dict[str, Rule] = {}
        for r in rules:
            if r.id in seen:
                raise RuleError(f"{r.source}: rule '{r.id}': id already used by a rule in "
                                f"{seen[r.id].source}; every rule needs its own id")
            seen[r.id] = r
        return cls(list(rules))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT_VERSION, "rules": [r.to_dict() for r in self.rules],
                "sources": [r.source for r in self.rules]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RuleSet":
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise RuleError(f"stored rules: expected a dict with format {FORMAT_VERSION}")
        raw = data.get("rules") or []
        sources = data.get("sources") or []
        if len(sources) != len(raw):
            sources = ["<stored>"] * len(raw)
        return cls._checked([parse_rule(r, s, i) for i, (r, s) in enumerate(zip(raw, sources))])

    def fingerprint(self) -> str:
        """sha256 of the rules' canonical content (order matters; file names do not)."""
        content = {"format": FORMAT_VERSION, "rules": [r.to_dict() for r in self.rules]}
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    # ---- checking against a model ------------------------------------------------------------
    def validate_labels(self, labels: Iterable[str]) -> None:
        """Raise RuleError if a rule forces a category that is not exactly one of ``labels``,
        or names an ``if_predicted`` label that is neither a label nor a parent of one."""
        labels = list(labels)
        label_set = set(labels)
        parents = {CATEGORY_SEP.join(lab.split(CATEGORY_SEP)[:k])
                   for lab in labels for k in range(1, lab.count(CATEGORY_SEP) + 1)}
        problems = []
        for r in self.rules:
            if r.action == "category" and r.target not in label_set:
                problems.append(f"{r.source}: rule '{r.id}': category '{r.target}' is not a label "
                                f"of the model{_label_hint(r.target, labels)}")
            for lab in r.if_predicted or ():
                if lab not in label_set and lab not in parents:
                    problems.append(f"{r.source}: rule '{r.id}': if_predicted label '{lab}' is not "
                                    f"a label of the model{_label_hint(lab, labels)}")
        if problems:
            raise RuleError("rules do not fit the model's labels:\n  " + "\n  ".join(problems))

    # ---- applying ------------------------------------------------------------------------------
    def apply(self, items: pd.DataFrame, predicted: list[str] | None = None) -> pd.DataFrame:
        """One row per item (same index): the winning rule's id, action, category and reason.

        Rules with ``if_predicted`` only fire when ``predicted`` is given.
        """
        n = len(items)
        out = {c: np.full(n, None, dtype=object) for c in OUTPUT_COLUMNS}
        texts = field_texts(items, self.rules)
        pred = predicted_labels(predicted, n)
        undecided = np.ones(n, dtype=bool)
        order = sorted(range(len(self.rules)), key=lambda i: (-self.rules[i].priority, i))
        for i in order:
            rule = self.rules[i]
            idx = match_rule(rule, texts, pred, np.flatnonzero(undecided))
            if idx.size == 0:
                continue
            undecided[idx] = False
            out["rule_id"][idx] = rule.id
            out["rule_action"][idx] = rule.action
            if rule.action == "category":
                out["rule_category"][idx] = rule.target
            else:
                out["rule_reason"][idx] = rule.target
            if not undecided.any():
                break
        return pd.DataFrame(out, index=items.index, dtype=object)

    def matches(self, items: pd.DataFrame, predicted: list[str] | None = None) -> pd.DataFrame:
        """Boolean table [items x rule ids]: which rules match each item, ignoring priority."""
        texts = field_texts(items, self.rules)
        pred = predicted_labels(predicted, len(items))
        cols = {}
        for rule in self.rules:
            col = np.zeros(len(items), dtype=bool)
            col[match_rule(rule, texts, pred, np.arange(len(items)))] = True
            cols[rule.id] = col
        return pd.DataFrame(cols, index=items.index, columns=[r.id for r in self.rules])


def _label_hint(label: str, labels: list[str]) -> str:
    deeper = [lab for lab in labels if lab.startswith(label + CATEGORY_SEP)]
    if deeper:
        return (f" (the model's labels are deeper, e.g. '{deeper[0]}'; "
                f"a rule must name one exact label)")
    close = difflib.get_close_matches(label, labels, n=3, cutoff=0.6)
    if close:
        return " (did you mean " + ", ".join(f"'{c}'" for c in close) + "?)"
    parent = label.split(CATEGORY_SEP)[0]
    if CATEGORY_SEP in label and parent in labels:
        return f" (the model's labels stop at '{parent}')"
    return ""
