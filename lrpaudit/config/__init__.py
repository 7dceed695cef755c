"""Rule configuration: strict YAML files with line numbers, presets, ``extends`` chains, node matchers.

    from lrpaudit.config import load_config
    config = load_config("lrp.yaml")              # or load_config(preset="epsilon-plus-flat")
    assignment = config.assign(graph)             # rule per node, with "lrp.yaml:12"-style sources
    tolerance = config.tolerance(graph)

Validation: a custom PyYAML loader (:mod:`.yaml_loader`) keeps line/column positions, pydantic v2 (strict,
``extra="forbid"``) checks the shape (:mod:`.schema`, which says why pydantic), and what depends on other values
is checked by hand in :mod:`.file`, all reported as ``file:line:col: dotted.key: message``.

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

# Imported on first use (PEP 562): `lrpaudit presets` reads `config.presets` without pydantic, numpy or torch.
from .._lazy import lazy_exports

_PUBLIC = {
    "Assignment": "..rules.assign",
    "Config": ".settings",
    "ConfigFileError": ".schema",
    "Matcher": ".matching",
    "OverrideEntry": ".file",
    "RuleEntry": ".file",
    "list_presets": ".presets",
    "load_config": ".settings",
    "preset_path": ".presets",
}

__all__ = sorted(_PUBLIC)


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
