"""What a keyword rule is, and reading rule files (``rules/*.yaml``, format: rules/README.md) with
validation: a rule either forces a category (the item is auto-accepted with that label) or forces
human review; every problem names the file, the rule and what is wrong."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from .matching import keyword_pattern, normalize_text

FIELDS: tuple[str, ...] = ("title", "description", "brand", "domain", "specs")
MATCHERS: tuple[str, ...] = ("any_keywords", "all_keywords", "none_keywords", "regex")
RULE_KEYS: tuple[str, ...] = ("id", "description", "priority", "when", "action")
ACTIONS: tuple[str, ...] = ("category", "review")
OUTPUT_COLUMNS: tuple[str, ...] = ("rule_id", "rule_action", "rule_category", "rule_reason")
FORMAT_VERSION = 1


class RuleError(ValueError):
    """A rule file or rule is invalid; the message names the file, the rule and the problem."""


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
        return parse_rule(data, source, position)


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


def parse_file(path: Path) -> list[Rule]:
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
    return [parse_rule(r, source, i) for i, r in enumerate(data)]


def _unknown(key: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key '{key}'{hint}; allowed: {', '.join(allowed)}"


def parse_rule(data: Any, source: str, position: int) -> Rule:
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
