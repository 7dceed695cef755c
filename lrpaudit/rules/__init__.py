"""LRP rules: the registry of rule specs (``spec``), the rule of every node (``assign``), linear-type rules as
branches (``linear``, ``linear_view``), and the rules of the other ops (``elementwise``)."""

from .spec import BIAS_MODES, RULES, Rule, RuleSpec, default_rule

__all__ = ["BIAS_MODES", "RULES", "Rule", "RuleSpec", "default_rule"]
