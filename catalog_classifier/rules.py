"""Keyword rules: overrides kept by non-programmers in ``rules/*.yaml`` (format: rules/README.md).

A rule either forces a category (the item is auto-accepted with that label) or forces human review.
Matching runs on NFKC-normalised, lower-cased text; keywords match whole words or phrases only.
Of the rules that match an item, the highest ``priority`` wins; ties go to the earlier rule
(files in name order, then position in the file).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd
import yaml

from catalog_classifier.catalog.schema import CATEGORY_SEP

FIELDS: tuple[str, ...] = ("title", "description", "brand", "domain")
MATCHERS: tuple[str, ...] = ("any_keywords", "all_keywords", "none_keywords", "regex")
RULE_KEYS: tuple[str, ...] = ("id", "description", "priority", "when", "action")
ACTIONS: tuple[str, ...] = ("category", "review")
OUTPUT_COLUMNS: tuple[str, ...] = ("rule_id", "rule_action", "rule_category", "rule_reason")
FORMAT_VERSION = 1


class RuleError(ValueError):
    """A rule file or rule is invalid; the message names the file, the rule and the problem."""


def normalize_text(value: Any) -> str:
    """The text rules see: NFKC-normalised and lower-cased; None/NaN become ""."""
    if not isinstance(value, str):
        if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
            return ""
        value = str(value)
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
    return value.lower()


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern:
    """One regex matching any of the keywords as a whole word/phrase (any whitespace between words).

    The word-boundary check on the left is a lookbehind placed *after* the first word, so every
    alternative starts with a literal and `re` can skip ahead quickly (about 20x faster).
    """
    bodies = []
    for k in keywords:
        first, *rest = (re.escape(w) for w in normalize_text(k).split())
        bodies.append(first + rf"(?<!\w{first})" + "".join(r"\s+" + w for w in rest))
    return re.compile("(?:" + "|".join(bodies) + r")(?!\w)")


@dataclass
class FieldCondition:
    """What one text field must (not) contain. All given parts must hold."""

    any_keywords: tuple[str, ...] = ()
    all_keywords: tuple[str, ...] = ()
    none_keywords: tuple[str, ...] = ()
    regex: str | None = None

    def patterns(self) -> tuple[list[re.Pattern], re.Pattern | None]:
        """(patterns that must all match, pattern that must not match)."""
        must = [keyword_pattern([k]) for k in self.all_keywords]
        if self.any_keywords:
            must.append(keyword_pattern(self.any_keywords))
        if self.regex is not None:
            must.append(re.compile(self.regex, re.IGNORECASE))
        return must, (keyword_pattern(self.none_keywords) if self.none_keywords else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in MATCHERS:
            value = getattr(self, name)
            if value:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass
class Rule:
    id: str
    description: str
    priority: int
    fields: dict[str, FieldCondition]
    action: str  # "category" | "review"
    target: str  # the forced category, or the review reason
    if_predicted: tuple[str, ...] | None = None
    source: str = ""  # file the rule came from (not part of its content)
    _compiled: list = field(default=None, init=False, repr=False, compare=False)

    @property
    def category(self) -> str | None:
        return self.target if self.action == "category" else None

    @property
    def review(self) -> str | None:
        return self.target if self.action == "review" else None

    def compiled(self) -> list[tuple[str, list[re.Pattern], re.Pattern | None]]:
        if self._compiled is None:
            self._compiled = [(f, *c.patterns()) for f, c in self.fields.items()]
        return self._compiled

    def to_dict(self) -> dict[str, Any]:
        when: dict[str, Any] = {f: c.to_dict() for f, c in self.fields.items()}
        if self.if_predicted is not None:
            when["if_predicted"] = list(self.if_predicted)
        return {"id": self.id, "description": self.description, "priority": self.priority,
                "when": when, "action": {self.action: self.target}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", position: int = 0) -> "Rule":
        return _parse_rule(data, source, position)


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
            rules.extend(_parse_file(f))
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
        return cls._checked([_parse_rule(r, s, i) for i, (r, s) in enumerate(zip(raw, sources))])

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
        texts = _texts(items, self.rules)
        pred = _predicted(predicted, n)
        undecided = np.ones(n, dtype=bool)
        order = sorted(range(len(self.rules)), key=lambda i: (-self.rules[i].priority, i))
        for i in order:
            rule = self.rules[i]
            idx = _match(rule, texts, pred, np.flatnonzero(undecided))
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
        texts = _texts(items, self.rules)
        pred = _predicted(predicted, len(items))
        cols = {}
        for rule in self.rules:
            col = np.zeros(len(items), dtype=bool)
            col[_match(rule, texts, pred, np.arange(len(items)))] = True
            cols[rule.id] = col
        return pd.DataFrame(cols, index=items.index, columns=[r.id for r in self.rules])


# ---- matching internals --------------------------------------------------------------------------
def _texts(items: pd.DataFrame, rules: list[Rule]) -> dict[str, np.ndarray]:
    used = {f for r in rules for f in r.fields}
    out = {}
    for f in used:
        if f in items.columns:
            out[f] = np.array([normalize_text(v) for v in items[f].tolist()], dtype=object)
        else:
            out[f] = np.full(len(items), "", dtype=object)
    return out


def _predicted(predicted: list[str] | None, n: int) -> np.ndarray | None:
    if predicted is None:
        return None
    pred = np.asarray(list(predicted), dtype=object)
    if pred.shape != (n,):
        raise ValueError(f"predicted has {pred.size} entries for {n} items")
    return pred


def _in_family(label: Any, wanted: tuple[str, ...]) -> bool:
    """label equals one of ``wanted`` or lies below one of them in the category path."""
    if not isinstance(label, str):
        return False
    return any(label == w or label.startswith(w + CATEGORY_SEP) for w in wanted)


def _match(rule: Rule, texts: dict[str, np.ndarray], pred: np.ndarray | None,
           idx: np.ndarray) -> np.ndarray:
    """Positions among ``idx`` that the rule matches; each condition narrows the candidates."""
    if rule.if_predicted is not None:
        if pred is None:
            return idx[:0]
        ok = {lab: _in_family(lab, rule.if_predicted) for lab in set(pred[idx].tolist())}
        idx = idx[np.fromiter((ok[p] for p in pred[idx]), dtype=bool, count=idx.size)]
    for f, must, must_not in rule.compiled():
        for pat in must:
            if idx.size == 0:
                return idx
            idx = idx[_contains(texts[f][idx], pat)]
        if must_not is not None and idx.size:
            idx = idx[~_contains(texts[f][idx], must_not)]
    return idx


def _contains(texts: np.ndarray, pat: re.Pattern) -> np.ndarray:
    # what pandas' str.contains does for object arrays, minus its warning about regex groups
    return np.fromiter((pat.search(t) is not None for t in texts), dtype=bool, count=len(texts))


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


# ---- parsing --------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep only the last)."""


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' appears twice in the same block", key_node.start_mark)
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_file(path: Path) -> list[Rule]:
    source = str(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as e:
        raise RuleError(f"{source}: not UTF-8 text ({e})") from None
    except yaml.YAMLError as e:
        raise RuleError(f"{source}: not valid YAML: {e}") from None
    if data is None:
        return []
    if isinstance(data, dict):
        extra = set(data) - {"rules"}
        if extra:
            raise RuleError(f"{source}: unknown top-level keys {sorted(map(str, extra))}; "
                            "the file must hold one list named 'rules'")
        data = data.get("rules") or []
    if not isinstance(data, list):
        raise RuleError(f"{source}: expected a list of rules under 'rules:'")
    return [_parse_rule(r, source, i) for i, r in enumerate(data)]


def _unknown(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; allowed: {', '.join(allowed)}"


def _parse_rule(data: Any, source: str, position: int) -> Rule:
    where = f"{source}: rule #{position + 1}"
    if not isinstance(data, dict):
        raise RuleError(f"{where}: a rule must be a block of 'key: value' lines, got {data!r}")
    rid = data.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if not isinstance(rid, str) or not rid.strip():
        raise RuleError(f"{where}: missing 'id' (a short unique name)")
    where = f"{source}: rule '{rid}'"

    def fail(msg: str):
        raise RuleError(f"{where}: {msg}")

    for key in data:
        if key not in RULE_KEYS:
            fail(_unknown(key, RULE_KEYS))
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        fail("missing 'description' (say why the rule exists)")
    priority = data.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        fail(f"'priority' must be a whole number, got {priority!r}")

    action = data.get("action")
    if action is None:
        fail("missing 'action' (category: \"<label>\" or review: \"<reason>\")")
    if not isinstance(action, dict) or len(action) != 1:
        fail("'action' needs exactly one of: category: \"<label>\", review: \"<reason>\"")
    (kind, target), = action.items()
    if kind not in ACTIONS:
        fail("in 'action': " + _unknown(kind, ACTIONS))
    if not isinstance(target, str) or not target.strip():
        fail(f"'action: {kind}' needs a non-empty text value")

    when = data.get("when")
    if not isinstance(when, dict) or not when:
        fail("missing 'when' (the conditions, e.g. title: {any_keywords: [...]})")
    fields: dict[str, FieldCondition] = {}
    if_predicted = None
    for fname, cond in when.items():
        if fname == "if_predicted":
            if_predicted = tuple(_texts_list(cond, f"{where}: if_predicted"))
            continue
        if fname not in FIELDS:
            fail("in 'when': " + _unknown(fname, (*FIELDS, "if_predicted")))
        fields[fname] = _parse_condition(cond, f"{where}: when.{fname}")
    positive = any(c.any_keywords or c.all_keywords or c.regex for c in fields.values())
    if not positive and not if_predicted:
        fail("'when' needs any_keywords, all_keywords, regex or if_predicted; "
             "none_keywords alone would match nearly everything")
    return Rule(id=rid, description=description.strip(), priority=priority, fields=fields,
                action=kind, target=target, if_predicted=if_predicted, source=source)


def _parse_condition(cond: Any, where: str) -> FieldCondition:
    if not isinstance(cond, dict) or not cond:
        raise RuleError(f"{where}: expected one or more of {', '.join(MATCHERS)}")
    parts: dict[str, Any] = {}
    for key, value in cond.items():
        if key not in MATCHERS:
            raise RuleError(f"{where}: " + _unknown(key, MATCHERS))
        if key == "regex":
            if not isinstance(value, str) or not value:
                raise RuleError(f"{where}: regex must be a non-empty text in quotes")
            try:
                re.compile(value, re.IGNORECASE)
            except re.error as e:
                raise RuleError(f"{where}: invalid regex {value!r}: {e}") from None
            parts[key] = value
        else:
            parts[key] = tuple(_texts_list(value, f"{where}: {key}"))
    return FieldCondition(**parts)


def _texts_list(value: Any, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise RuleError(f"{where}: expected a list like [\"word\", \"two words\"]")
    for v in values:
        if not isinstance(v, str):
            raise RuleError(f"{where}: {v!r} is not text; put it in quotes, e.g. \"{v}\"")
        if not normalize_text(v).split():
            raise RuleError(f"{where}: empty keyword")
    return list(values)
