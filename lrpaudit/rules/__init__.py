"""LRP rules: declarative specs (``spec``), linear-type branches (``linear``), the other ops (``other``)."""

from .spec import BIAS_MODES, RULES, Rule, RuleSpec, default_rule

__all__ = ["BIAS_MODES", "RULES", "Rule", "RuleSpec", "default_rule"]
