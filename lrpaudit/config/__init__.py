"""Rule configuration: strict YAML files with line numbers, presets, ``extends`` chains, node matchers.

    from lrpaudit.config import load_config
    config = load_config("lrp.yaml")              # or load_config(preset="epsilon-plus-flat")
    assignment = config.assign(graph)             # rule per node, with "lrp.yaml:12"-style sources
    tolerance = config.tolerance(graph)

Validation approach: a custom PyYAML loader composes the document into nodes (YAML 1.2 core-schema scalars, so
``1e-3`` is a number and ``yes`` a string; duplicate keys are errors) and converts them by hand into plain data
plus a table of line/column positions (:mod:`.yaml_loader`). pydantic v2 models with ``strict=True``,
``extra="forbid"`` and ``allow_inf_nan=False`` then check the shape of the data (:mod:`.schema`), and every error
location pydantic reports is mapped back through the position table. pydantic was chosen over a hand-written
validator because it reports exact types strictly (``true`` is not a number, ``"1e-3"`` is not a float), knows
every allowed key for the "did you mean" hint, and can emit a JSON Schema; over jsonschema because its error
locations point at the offending key itself. What depends on other values (a rule's parameters depend on its
name; op names; the version; ``extends`` targets) is checked by hand in :mod:`.layers` with the same
``file:line:col: dotted.key: message`` format. The first error in file order is raised; all of them are on the
exception's ``errors`` attribute when pydantic found several.

Config format (``version: 1`` is required in every file, presets included)::

    version: 1
    extends: epsilon-plus-flat      # a preset name, or a path relative to this file; chains allowed
    explain: logits                 # logits | output
    target: predicted               # predicted | class index
    init: logit                     # logit | one
    dtype: float64                  # float64 | float32
    bias: absorb                    # default bias mode of every rule (absorb | ignore | distribute)
    rules:                          # first match wins; a linear-type node that nothing matches is an error
      - match: {op: conv, name: "features.*", index: 0, position: first}   # all given keys must hold
        rule: zplus
        stabilizer: 1.0e-6          # the rule's parameters
        bias: ignore                # this entry's bias mode
    tolerance:
      gate: strict                  # strict | explained
      layer_rtol: 1.0e-4
      end_to_end_rtol: 1.0e-3
      overrides:
        - match: {name: "fc*"}
          layer_rtol: 0.05

See :mod:`.matching` for the matchers and :mod:`.settings` for precedence.
"""

from .layers import OverrideEntry, RuleEntry
from .matching import Matcher
from .presets import list_presets, preset_path
from .schema import ConfigFileError
from .settings import Assignment, Config, load_config

__all__ = [
    "Assignment",
    "Config",
    "ConfigFileError",
    "Matcher",
    "OverrideEntry",
    "RuleEntry",
    "list_presets",
    "load_config",
    "preset_path",
]
