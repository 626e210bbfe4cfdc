"""Keyword rules: overrides kept by non-programmers in ``rules/*.yaml`` (format: rules/README.md).

``loading`` reads and validates rule files, ``matching`` decides which items a rule meets,
``ruleset`` loads a folder and applies it.
"""
from .loading import Rule, RuleError
from .ruleset import RuleSet

__all__ = ["Rule", "RuleError", "RuleSet"]
