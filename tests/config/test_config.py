"""Config loading: strict YAML with positions, every error path, matchers, precedence, presets, packaging."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

import lrpaudit
from lrpaudit.config import ConfigFileError, list_presets, load_config, preset_path
from lrpaudit.config.presets import presets_dir
from lrpaudit.config.yaml_loader import YamlError, load_yaml
from lrpaudit.errors import ConfigError
from lrpaudit.frontends import load_model
from lrpaudit.passes import strip_output_softmax
from tests.helpers.config_models import SmallCNN
from tests.helpers.config_models import export_small as _export
from tests.helpers.paths import REPO as REPO_ROOT

ROOT = REPO_ROOT


# ------------------------------------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "cnn": _export(SmallCNN(), folder / "cnn.onnx"),
        "cnn_bn": _export(SmallCNN(input_bn=True), folder / "cnn_bn.onnx"),
    }


def _graph(path: Path, batch: int = 2):
    return strip_output_softmax(load_model(path).graph({"x": (batch, 3, 16, 16)}))


@pytest.fixture(scope="module")
def graph(models):
    """bn0 (affine) conv1 relu1 pool1 conv2 relu2 pool2 flatten fc1 relu3 fc2."""
    g = _graph(models["cnn_bn"])
    ops = {node.id: node.op for node in g.nodes}
    assert ops["bn0"] == "affine", ops
    assert [ops[i] for i in ("conv1", "conv2", "fc1", "fc2")] == [
        "conv",
        "conv",
        "linear",
        "linear",
    ]
    return g


# ------------------------------------------------------------------------------------------------ helpers


def write(folder: Path, text: str, name: str = "lrp.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """Work inside tmp_path so config paths (and their error messages) are relative: 'lrp.yaml:3:1: ...'."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(text: str, folder: Path) -> ConfigError:
    write(folder, text)
    with pytest.raises(ConfigError) as info:
        load_config("lrp.yaml")
    return info.value


def assert_error(text: str, folder: Path, prefix: str, *fragments: str) -> ConfigError:
    error = config_error(text, folder)
    message = str(error)
    assert message.startswith(prefix), message
    for fragment in fragments:
        assert fragment in message, message
    return error


RULES_OK = "version: 1\nrules:\n  - match: {op: [conv, linear, affine]}\n    rule: epsilon\n"


# ------------------------------------------------------------------------------------------------ YAML reader


def test_yaml_12_scalars():
    data, positions = load_yaml(
        "a: 1e-3\nb: 017\nc: yes\nd: 0x10\ne: -.inf\nf: 2024-01-01\ng: True\nh: 1.5E+2\n"
    )
    assert data == {"a": 0.001, "b": 17, "c": "yes", "d": 16, "e": float("-inf"), "f": "2024-01-01"} | {
        "g": True,
        "h": 150.0,
    }
    assert positions.value(("b",)) == (2, 4) and positions.key(("b",)) == (2, 1)


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        ("a: 1\na: 2\n", (2, 1), "duplicate key (first defined at line 1)"),
        ("a: &x {b: 1}\nc:\n  <<: *x\n", (3, 3), "merge keys"),
        ("1: 2\n", (1, 1), "keys must be strings"),
        ("a: !!python/name:os.system x\n", (1, 4), "unsupported YAML tag"),
        ("a: [1,\n", (2, 1), "invalid YAML"),
    ],
)
def test_yaml_reader_errors(text, where, fragment):
    with pytest.raises(YamlError) as info:
        load_yaml(text)
    assert (info.value.line, info.value.column) == where
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------------ error paths


def test_unknown_rule_param_did_you_mean(here):
    text = """
        version: 1
        rules:
          - match: {op: conv}
            rule: zplus
          - rule: alphabeta
            beta: 1
            alpah: 2
    """
    error = assert_error(text, here, "lrp.yaml:7:5: rules[1].alpah: unknown key (did you mean 'alpha'?)")
    assert isinstance(error, ConfigFileError) and (error.line, error.column) == (7, 5)


def test_unknown_top_level_key_did_you_mean(here):
    assert_error(
        "version: 1\ntolerence:\n  layer_rtol: 1.0e-3\n",
        here,
        "lrp.yaml:2:1: tolerence: unknown key (did you mean 'tolerance'?)",
    )


def test_unknown_nested_keys_did_you_mean(here):
    assert_error(
        "version: 1\ntolerance:\n  layer_rtl: 1.0e-3\n",
        here,
        "lrp.yaml:3:3: tolerance.layer_rtl: unknown key (did you mean 'layer_rtol'?)",
    )
    assert_error(
        "version: 1\nrules:\n  - match: {nme: 'fc*'}\n    rule: epsilon\n",
        here,
        "lrp.yaml:3:13: rules[0].match.nme: unknown key (did you mean 'name'?)",
    )


def test_param_of_another_rule(here):
    text = "version: 1\nrules:\n  - match: {op: conv}\n    rule: zplus\n    epsilon: 0.1\n"
    assert_error(text, here, "lrp.yaml:5:5: rules[0].epsilon: unknown key (rule 'zplus' takes: stabilizer)")


@pytest.mark.parametrize(
    ("line", "prefix", "fragment"),
    [
        ("dtype: 64", "lrp.yaml:2:8: dtype:", "expected 'float64' or 'float32', got number 64"),
        ("dtype: float46", "lrp.yaml:2:8: dtype:", "(did you mean 'float64'?)"),
        ("init: yes", "lrp.yaml:2:7: init:", "got string 'yes'"),
        ("rules: {op: conv}", "lrp.yaml:2:8: rules:", "expected a list, got a mapping"),
        (
            "tolerance:\n  layer_rtol: yes",
            "lrp.yaml:3:15: tolerance.layer_rtol:",
            "expected a number, got string",
        ),
        ("tolerance:\n  layer_rtol: '1e-3'", "lrp.yaml:3:15: tolerance.layer_rtol:", "expected a number"),
        ("tolerance:\n  gate: true", "lrp.yaml:3:9: tolerance.gate:", "got boolean true"),
        ("target: pred", "lrp.yaml:2:9: target:", "expected 'predicted' or a class index"),
        ("target: -1", "lrp.yaml:2:9: target:", "expected 'predicted' or a class index"),
        ("extends: 3", "lrp.yaml:2:10: extends:", "expected a string, got number 3"),
        ("explain: logit", "lrp.yaml:2:10: explain:", "(did you mean 'logits'?)"),
    ],
)
def test_wrong_types(here, line, prefix, fragment):
    assert_error(f"version: 1\n{line}\n", here, prefix, fragment)


def test_wrong_param_types(here):
    base = "version: 1\nrules:\n  - match: {op: conv}\n    rule: epsilon\n"
    assert_error(base + "    epsilon: '0.1'\n", here, "lrp.yaml:5:14: rules[0].epsilon:", "expected a number")
    assert_error(base + "    epsilon: true\n", here, "lrp.yaml:5:14: rules[0].epsilon:", "got boolean true")
    assert_error(
        "version: 1\nrules:\n  - {match: {op: conv}, rule: zbox, low: [[1], 'a']}\n",
        here,
        "lrp.yaml:3:42: rules[0].low:",
        "rectangular list of numbers",
    )


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (
            "version: 1\ntolerance:\n  layer_rtol: .nan\n",
            "lrp.yaml:3:15: tolerance.layer_rtol: must be a finite number",
        ),
        (
            "version: 1\ntolerance:\n  end_to_end_rtol: .inf\n",
            "lrp.yaml:3:20: tolerance.end_to_end_rtol: must be",
        ),
        (
            "version: 1\nrules:\n  - {match: {op: conv}, rule: epsilon, epsilon: -.inf}\n",
            "lrp.yaml:3:49: rules[0].epsilon: must be a finite number",
        ),
        (
            "version: 1\nrules:\n  - {match: {op: conv}, rule: zbox, high: [.nan, 1]}\n",
            "lrp.yaml:3:43: rules[0].high: must contain only finite numbers",
        ),
    ],
)
def test_nan_and_inf(here, text, prefix):
    assert_error(text, here, prefix)


def test_duplicate_key(here):
    text = "version: 1\nrules:\n  - {match: {op: conv}, rule: zplus}\ndtype: float32\nrules: []\n"
    assert_error(text, here, "lrp.yaml:5:1: rules: duplicate key (first defined at line 2)")


def test_1e_minus_3_is_a_number(here):
    write(
        here,
        """
        version: 1
        rules:
          - match: {op: [conv, linear, affine]}
            rule: epsilon
            epsilon: 1e-3
        tolerance:
          layer_rtol: 1e-3
          end_to_end_rtol: 5E-2
          overrides:
            - match: {name: "fc*"}
              layer_rtol: 2e-1
        """,
    )
    config = load_config("lrp.yaml")
    assert config.layer_rtol == 0.001 and config.end_to_end_rtol == 0.05
    assert config.rules[0].params == {"epsilon": 0.001}
    assert config.overrides[0].layer_rtol == 0.2


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        (
            "rules: []\n",
            "lrp.yaml:1:1: version: missing required key (a config file starts with 'version: 1')",
        ),
        ("version: 2\n", "lrp.yaml:1:10: version: unsupported version 2 (this lrpaudit reads version 1)"),
        ("version: '1'\n", "lrp.yaml:1:10: version: expected an integer, got string '1'"),
        ("version: 1.0\n", "lrp.yaml:1:10: version: expected an integer"),
        ("", "lrp.yaml:1:1: <root>: empty config"),
        ("- version: 1\n", "lrp.yaml:1:1: <root>: expected a mapping of settings, got a list"),
        ("version: 1\nrules: [\n", "lrp.yaml:3:1: <root>: invalid YAML"),
    ],
)
def test_version_and_document_errors(here, text, prefix):
    assert_error(text, here, prefix)


def test_missing_rule_key(here):
    assert_error(
        "version: 1\nrules:\n  - match: {op: conv}\n    epsilon: 1.0e-3\n",
        here,
        "lrp.yaml:3:5: rules[0].rule: missing required key",
    )


def test_bad_rule_name(here):
    assert_error(
        "version: 1\nrules:\n  - match: {op: conv}\n    rule: epsilom\n",
        here,
        "lrp.yaml:4:11: rules[0].rule: unknown rule 'epsilom' (did you mean 'epsilon'?)",
    )


def test_bad_param_values(here):
    base = "version: 1\nrules:\n  - match: {op: conv}\n"
    assert_error(
        base + "    rule: gamma\n    gamma: -1\n", here, "lrp.yaml:5:12: rules[0].gamma: must be >= 0, got -1"
    )
    assert_error(
        base + "    rule: zbox\n    low: 2\n    high: 1\n",
        here,
        "lrp.yaml:6:11: rules[0].high: zbox needs low < high",
    )


def test_alphabeta_needs_alpha_minus_beta_one(here):
    text = "version: 1\nrules:\n  - match: {op: conv}\n    rule: alphabeta\n    alpha: 3\n    beta: 1\n"
    assert_error(text, here, "lrp.yaml:5:12: rules[0].alpha: alpha - beta must be 1, got alpha=3, beta=1")
    text = "version: 1\nrules:\n  - match: {op: conv}\n    rule: alphabeta\n    beta: 0\n"
    assert_error(text, here, "lrp.yaml:5:11: rules[0].beta: alpha - beta must be 1, got alpha=2, beta=0")


def test_bad_bias_mode(here):
    assert_error(
        "version: 1\nbias: absorbs\n",
        here,
        "lrp.yaml:2:7: bias: expected 'absorb', 'ignore' or 'distribute', got string 'absorbs'",
        "(did you mean 'absorb'?)",
    )
    assert_error(
        "version: 1\nrules:\n  - {match: {op: conv}, rule: zplus, bias: distrib}\n",
        here,
        "lrp.yaml:3:44: rules[0].bias: expected 'absorb', 'ignore' or 'distribute'",
        "(did you mean 'distribute'?)",
    )


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("tolerance:\n  layer_rtol: 0\n", "lrp.yaml:3:15: tolerance.layer_rtol: must be > 0, got 0"),
        ("tolerance:\n  end_to_end_rtol: -1.0e-3\n", "lrp.yaml:3:20: tolerance.end_to_end_rtol: must be > 0"),
        (
            "tolerance:\n  overrides:\n    - match: {name: 'fc*'}\n      layer_rtol: 0.0\n",
            "lrp.yaml:5:19: tolerance.overrides[0].layer_rtol: must be > 0, got 0.0",
        ),
        (
            "tolerance:\n  overrides:\n    - layer_rtol: 0.1\n",
            "lrp.yaml:4:7: tolerance.overrides[0].match: missing required key",
        ),
    ],
)
def test_tolerance_must_be_positive(here, text, prefix):
    assert_error("version: 1\n" + text, here, prefix)


def test_unknown_op_and_bad_matchers(here):
    base = "version: 1\nrules:\n  - rule: epsilon\n    match: "
    assert_error(
        base + "{op: Conv}\n", here, "lrp.yaml:4:17: rules[0].match.op[0]: unknown op 'Conv'", "'conv'"
    )
    assert_error(base + "{op: []}\n", here, "lrp.yaml:4:17: rules[0].match.op: must not be empty")
    assert_error(base + "{index: -1}\n", here, "lrp.yaml:4:20: rules[0].match.index: must be >= 0, got -1")
    assert_error(
        base + "{position: middle}\n", here, "lrp.yaml:4:23: rules[0].match.position: expected 'first'"
    )
    assert_error(base + "{name: ''}\n", here, "lrp.yaml:4:19: rules[0].match.name: must not be empty")
    assert_error(
        base + "conv\n", here, "lrp.yaml:4:12: rules[0].match: expected a mapping, got string 'conv'"
    )


def test_rule_on_an_inapplicable_op(here):
    assert_error(
        "version: 1\nrules:\n  - match: {op: [conv, relu]}\n    rule: epsilon\n",
        here,
        "lrp.yaml:3:24: rules[0].match.op[1]: rule 'epsilon' does not apply to op 'relu'",
    )
    assert_error(
        "version: 1\nrules:\n  - match: {position: first}\n    rule: norm\n",
        here,
        "lrp.yaml:3:23: rules[0].match.position: rule 'norm' does not apply to the linear/conv nodes",
    )


def test_rule_on_an_inapplicable_node_at_assign(here, graph, monkeypatch):
    """A rule that applies to some but not all weighted ops, selected by position: the error names the node."""
    from lrpaudit.rules import spec

    write(here, "version: 1\nrules:\n  - match: {position: last}\n    rule: zplus\n")
    config = load_config("lrp.yaml")
    narrowed = spec.RuleSpec("zplus", {"stabilizer": 1e-6}, ("conv", "conv_transpose"), "", "")
    monkeypatch.setitem(spec.RULES, "zplus", narrowed)
    with pytest.raises(ConfigError) as info:
        config.assign(graph)
    message = str(info.value)
    assert message.startswith("lrp.yaml:3:12: rules[0].match: rule 'zplus' cannot apply to node 'fc2'"), (
        message
    )


def test_unmatched_rule_warns(here, graph):
    write(
        here,
        """
        version: 1
        rules:
          - match: {name: "nothing.*"}
            rule: epsilon
          - match: {op: [conv, linear, affine]}
            rule: epsilon
          - match: {op: conv}
            rule: zplus
        tolerance:
          overrides:
            - match: {name: "nope*"}
              layer_rtol: 0.1
        """,
    )
    warnings_ = load_config("lrp.yaml").assign(graph).warnings
    assert len(warnings_) == 3, warnings_
    assert warnings_[0].startswith("lrp.yaml:3: rules[0]") and warnings_[0].endswith("matches no node")
    assert warnings_[1].startswith("lrp.yaml:7: rules[2]") and "earlier entries take them all" in warnings_[1]
    assert (
        warnings_[2].startswith("lrp.yaml:11: tolerance.overrides[0]") and "matches no node" in warnings_[2]
    )


def test_linear_node_without_rule_lists_ids(here, graph):
    write(here, "version: 1\ndtype: float64\nrules:\n  - match: {op: conv}\n    rule: zplus\n")
    config = load_config("lrp.yaml")
    with pytest.raises(ConfigError) as info:
        config.assign(graph)
    message = str(info.value)
    assert message.startswith("lrp.yaml:3:1: rules: no rule matches the linear-type nodes"), message
    for node_id in ("'bn0' (affine)", "'fc1' (linear)", "'fc2' (linear)"):
        assert node_id in message
    assert "conv1" not in message


def test_no_config_at_all(graph):
    with pytest.raises(ConfigError, match="no rules configured"):
        load_config().assign(graph)
    with pytest.raises(ConfigError, match="not both"):
        load_config("lrp.yaml", preset="epsilon")


def test_missing_or_unreadable_file(here):
    with pytest.raises(ConfigError, match=r"^nope\.yaml: no such config file$"):
        load_config("nope.yaml")
    (here / "folder.yaml").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        load_config("folder.yaml")
    (here / "bin.yaml").write_bytes(b"version: 1\n\xff\xfe\n")
    with pytest.raises(ConfigError, match=r"^bin\.yaml:1:1: <root>: not UTF-8"):
        load_config("bin.yaml")


# ------------------------------------------------------------------------------------------------ extends


def test_extends_preset(here, graph):
    write(
        here,
        "version: 1\nextends: epsilon-plus-flat\nrules:\n  - match: {node_name: '/fc2/*'}\n    rule: zero\n",
    )
    config = load_config("lrp.yaml")
    assignment = config.assign(graph)
    assert assignment.rules["fc2"].name == "zero" and assignment.sources["fc2"] == "lrp.yaml:4"
    assert assignment.rules["conv1"].name == "flat"
    assert re.fullmatch(r"preset epsilon-plus-flat:\d+", assignment.sources["conv1"])
    assert assignment.warnings == []
    assert [item["preset"] for item in config.chain] == [None, "epsilon-plus-flat"]


def test_extends_relative_path_chain(here, graph):
    """Each path is relative to the file that names it (mid.yaml's shared/ is cfg/shared/); extends stays inside
    the extending file's folder, so a sibling folder (../shared) is refused (README: Security)."""
    write(here, "version: 1\nextends: epsilon\ndtype: float32\nbias: ignore\n", "cfg/shared/base.yaml")
    write(here, "version: 1\nextends: shared/base.yaml\ntolerance:\n  layer_rtol: 0.01\n", "cfg/mid.yaml")
    write(here, "version: 1\nextends: mid.yaml\nbias: distribute\n", "cfg/lrp.yaml")
    config = load_config("cfg/lrp.yaml")
    assert (config.dtype, config.bias, config.layer_rtol) == ("float32", "distribute", 0.01)
    assert config.sources["dtype"] == "cfg/shared/base.yaml:3"
    assert config.sources["bias"] == "cfg/lrp.yaml:3"
    assert config.sources["layer_rtol"] == "cfg/mid.yaml:4"
    assert config.sources["init"] == "default"
    assignment = config.assign(graph)
    assert assignment.rules["conv1"].name == "epsilon"
    assert assignment.rules["conv1"].bias == "distribute"  # the child's global bias beats the parent's
    assert [item["file"] for item in config.chain][:3] == [
        "cfg/lrp.yaml",
        "cfg/mid.yaml",
        "cfg/shared/base.yaml",
    ]
    write(here, "version: 1\nextends: epsilon\n", "shared/base.yaml")
    write(here, "version: 1\nextends: ../shared/base.yaml\n", "cfg/sibling.yaml")
    with pytest.raises(
        ConfigError, match=r"^cfg/sibling\.yaml:2:10: extends: \.\./shared/base\.yaml: leaves"
    ):
        load_config("cfg/sibling.yaml")


def test_extends_cycle(here):
    write(here, "version: 1\nextends: b.yaml\n", "a.yaml")
    write(here, "version: 1\nextends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError) as info:
        load_config("a.yaml")
    assert str(info.value) == "b.yaml:2:10: extends: extends cycle: a.yaml -> b.yaml -> a.yaml"
    write(here, "version: 1\nextends: ./lrp.yaml\n")
    with pytest.raises(
        ConfigError, match=r"^lrp\.yaml:2:10: extends: extends cycle: lrp\.yaml -> lrp\.yaml$"
    ):
        load_config("lrp.yaml")


def test_extends_missing(here):
    assert_error(
        "version: 1\nextends: base/none.yaml\n",
        here,
        "lrp.yaml:2:10: extends: no such config file: base/none.yaml",
    )
    assert_error(
        "version: 1\nextends: epsilon-plus-flt\n",
        here,
        "lrp.yaml:2:10: extends: unknown preset 'epsilon-plus-flt' (did you mean 'epsilon-plus-flat'?",
    )


def test_error_in_extended_file_names_that_file(here):
    write(here, "version: 1\nrules:\n  - match: {op: conv}\n    rule: zplu\n", "base.yaml")
    assert_error(
        "version: 1\nextends: base.yaml\n", here, "base.yaml:4:11: rules[0].rule: unknown rule 'zplu'"
    )


# ------------------------------------------------------------------------------------------------ matchers


def _assign(folder: Path, graph, rules: str, **kw):
    write(folder, "version: 1\nrules:\n" + textwrap.dedent(rules))
    return load_config("lrp.yaml").assign(graph)


CATCH_ALL = "- match: {op: [conv, linear, affine]}\n  rule: epsilon\n"


def test_match_op_and_op_list(here, graph):
    a = _assign(here, graph, "- match: {op: conv}\n  rule: zplus\n" + CATCH_ALL)
    assert {k for k, r in a.rules.items() if r.name == "zplus"} == {"conv1", "conv2"}
    a = _assign(here, graph, "- match: {op: [linear, affine]}\n  rule: zero\n" + CATCH_ALL)
    assert {k for k, r in a.rules.items() if r.name == "zero"} == {
        "fc1",
        "fc2",
        "bn0",
    }


def test_match_name_glob_skips_ops_the_rule_cannot_take(here, graph):
    a = _assign(here, graph, "- match: {name: 'fc*'}\n  rule: wsquare\n" + CATCH_ALL)
    assert {k for k, r in a.rules.items() if r.name == "wsquare"} == {"fc1", "fc2"}
    a = _assign(here, graph, "- match: {name: '*'}\n  rule: zplus\n" + CATCH_ALL)  # relu, pools keep defaults
    assert {r.name for k, r in a.rules.items() if k.startswith(("relu", "pool"))} == {
        "pass",
        "winner_take_all",
        "norm",
    }
    assert a.sources["relu1"] == "default"
    assert len(a.warnings) == 1 and a.warnings[0].startswith("lrp.yaml:5: rules[1]")  # zplus took them all


def test_match_index_and_position(here, graph):
    rules = (
        "- match: {position: first}\n  rule: flat\n"
        "- match: {position: last}\n  rule: zero\n"
        "- match: {index: 2}\n  rule: wsquare\n"
    )
    a = _assign(here, graph, rules + CATCH_ALL)
    assert a.rules["conv1"].name == "flat"  # the affine input BatchNorm is not counted
    assert a.rules["bn0"].name == "epsilon"
    assert a.rules["fc2"].name == "zero"
    assert a.rules["fc1"].name == "wsquare"
    assert (a.sources["conv1"], a.sources["fc2"], a.sources["fc1"]) == (
        "lrp.yaml:3",
        "lrp.yaml:5",
        "lrp.yaml:7",
    )


def test_match_keys_must_all_hold(here, graph):
    a = _assign(
        here,
        graph,
        "- match: {op: linear, position: first}\n  rule: zero\n"
        "- match: {op: conv, name: 'conv2', index: 1}\n  rule: zplus\n" + CATCH_ALL,
    )
    assert not any(r.name == "zero" for r in a.rules.values())
    assert [k for k, r in a.rules.items() if r.name == "zplus"] == ["conv2"]
    assert len(a.warnings) == 1 and a.warnings[0].startswith("lrp.yaml:3: rules[0]")


def test_first_match_wins(here, graph):
    a = _assign(
        here,
        graph,
        "- match: {op: conv}\n  rule: zplus\n- match: {position: first}\n  rule: flat\n" + CATCH_ALL,
    )
    assert a.rules["conv1"].name == "zplus" and a.sources["conv1"] == "lrp.yaml:3"
    assert a.warnings and "earlier entries take them all" in a.warnings[0]


def test_bias_modes_global_and_per_rule(here, graph):
    write(
        here,
        """
        version: 1
        bias: ignore
        rules:
          - match: {op: conv}
            rule: zplus
            bias: distribute
          - match: {op: [linear, affine]}
            rule: epsilon
        """,
    )
    a = load_config("lrp.yaml").assign(graph)
    assert a.rules["conv1"].bias == "distribute" and a.rules["fc1"].bias == "ignore"
    assert a.rules["relu1"].bias == "absorb"  # bias-free default rules keep the neutral default


def test_tolerance_overrides(here, graph):
    tolerance = """
        tolerance:
          gate: explained
          layer_rtol: 1.0e-5
          overrides:
            - match: {node_name: "/fc2/*"}
              layer_rtol: 0.05
            - match: {op: linear}
              layer_rtol: 0.01
            - match: {name: "fc2"}
              layer_rtol: 0.5
            - match: {position: first}
              layer_rtol: 0.002
    """
    write(here, RULES_OK + textwrap.dedent(tolerance).lstrip("\n"))
    config = load_config("lrp.yaml")
    tolerance = config.tolerance(graph)
    assert tolerance.gate == "explained" and tolerance.layer_rtol == 1e-5
    assert tolerance.for_node("fc2") == 0.05  # first match wins
    assert tolerance.for_node("fc1") == 0.01
    assert tolerance.for_node("conv1") == 0.002
    assert tolerance.for_node("conv2") == 1e-5
    assert config.node_tolerances(graph)["fc1"] == (0.01, "lrp.yaml:11")


# ------------------------------------------------------------------------------------------------ precedence


def test_child_rules_before_parent_rules(here, graph):
    base = "version: 1\nrules:\n  - match: {op: conv}\n    rule: zplus\n  - match: {op: [conv, linear, affine]}\n"
    write(here, base + "    rule: epsilon\n", "base.yaml")
    write(here, "version: 1\nextends: base.yaml\nrules:\n  - match: {position: first}\n    rule: flat\n")
    a = load_config("lrp.yaml").assign(graph)
    assert a.rules["conv1"].name == "flat" and a.sources["conv1"] == "lrp.yaml:4"
    assert a.rules["conv2"].name == "zplus" and a.sources["conv2"] == "base.yaml:3"
    assert a.rules["fc1"].name == "epsilon"
    assert a.rules["bn0"].name == "epsilon" and a.sources["fc2"] == "base.yaml:5"
    assert a.warnings == []


def test_command_line_beats_file(here):
    write(here, RULES_OK + "dtype: float32\ntolerance:\n  gate: explained\n")
    config = load_config("lrp.yaml").with_overrides(dtype="float64", gate=None, layer_rtol=0.5)
    assert (config.dtype, config.gate, config.layer_rtol) == ("float64", "explained", 0.5)
    assert config.sources["dtype"] == "command line" and config.sources["gate"] == "lrp.yaml:7"
    with pytest.raises(ConfigError, match="dtype must be one of"):
        config.with_overrides(dtype="float16")
    with pytest.raises(ConfigError, match="must be a finite number > 0"):
        config.with_overrides(layer_rtol=0)


def test_resolved_is_json(here, graph):
    write(here, "version: 1\nextends: epsilon-gamma-box\ntarget: 3\ntolerance:\n  layer_rtol: 1.0e-3\n")
    config = load_config("lrp.yaml")
    resolved = json.loads(json.dumps(config.resolved()))
    assert resolved["target"] == 3 and resolved["tolerance"]["layer_rtol"] == 1e-3
    assert resolved["sources"]["target"] == "lrp.yaml:3" and resolved["sources"]["dtype"] == "default"
    assert resolved["rules"][0]["rule"] == "zbox" and resolved["rules"][0]["source"].startswith("preset ")
    assert resolved["sha256"] == config.sha256 and len(config.sha256) == 64
    assert config.name == "lrp.yaml" and load_config(preset="zero").name == "preset zero"


# ------------------------------------------------------------------------------------------------ presets

PRESETS = [name for name, _ in list_presets()]


def test_the_presets_exist():
    assert set(PRESETS) >= {
        "zero",
        "epsilon",
        "epsilon-plus",
        "epsilon-plus-flat",
        "epsilon-gamma-box",
        "epsilon-alpha2-beta1",
        "epsilon-alpha2-beta1-flat",
        "conservative",
    }
    for name, description in list_presets():
        text = preset_path(name).read_text()
        assert text.startswith(f"# {name}: ") and description and "Conserves:" in text
        assert "\nversion: 1\n" in text
    with pytest.raises(ConfigError, match="did you mean 'conservative'"):
        preset_path("conservativ")


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_assigns(name, graph):
    config = load_config(preset=name)
    assert config.path is None and config.sha256 is None and config.preset == name
    assignment = config.assign(graph)
    for node in graph.nodes:
        if node.op in ("linear", "conv", "conv_transpose", "affine"):
            assert assignment.sources[node.id].startswith(f"preset {name}:"), node.id
    assert assignment.warnings == []  # preset entries never warn


def test_zennit_composites(graph):
    def rules(name):
        a = load_config(preset=name).assign(graph)
        return {k: (r.name, r.bias) for k, r in a.rules.items() if k.startswith(("conv", "fc", "bn0"))}

    affine = ("epsilon", "ignore")
    assert rules("epsilon-plus-flat") == {
        "bn0": affine,
        "conv1": ("flat", "absorb"),
        "conv2": ("zplus", "absorb"),
        "fc1": ("epsilon", "absorb"),
        "fc2": ("epsilon", "absorb"),
    }
    gamma_box = rules("epsilon-gamma-box")
    assert [gamma_box[k][0] for k in ("conv1", "conv2", "fc1")] == [
        "zbox",
        "gamma",
        "epsilon",
    ]
    alpha = rules("epsilon-alpha2-beta1-flat")
    assert [alpha[k][0] for k in ("conv1", "conv2", "fc2")] == [
        "flat",
        "alphabeta",
        "epsilon",
    ]
    assert [rules("epsilon-plus")[k][0] for k in ("conv1", "fc1")] == ["zplus", "epsilon"]
    assert {r for r, _ in rules("zero").values()} == {"zero"}


def _audit(path: Path, config) -> lrpaudit.AuditResult:
    return lrpaudit.audit(str(path), config, random=8, seed=1, batch_size=8)


def test_conservative_passes_where_epsilon_plus_flat_leaks_bias(models):
    """On a biased ReLU CNN with max and average pooling (no BatchNorm), as the preset promises."""
    conservative = _audit(models["cnn"], load_config(preset="conservative"))
    assert conservative.verdict == "pass", [r for r in conservative.layer_rows() if r["verdict"] != "pass"]
    assert max(row["rel_error"] for row in conservative.layer_rows()) < 1e-5
    flat = _audit(models["cnn"], load_config(preset="epsilon-plus-flat"))
    assert flat.verdict == "fail"
    worst = max(flat.layer_rows(), key=lambda row: row["rel_error"])
    assert worst["largest_category"] == "absorbed_bias", worst
    assert worst["rule_source"].startswith("preset epsilon-plus-flat:")


def test_packaging_ships_every_package_and_the_presets():
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["lrpaudit", "lrpaudit.*"]))
    assert set(tool["packages"]) == found | {"lrpaudit.presets"}, "update [tool.setuptools] packages"
    assert tool["package-dir"] == {"lrpaudit.presets": "configs"}
    assert tool["package-data"]["lrpaudit.presets"] == ["*.yaml"]
    assert presets_dir().resolve() in (ROOT / "configs", Path(lrpaudit.__file__).parent / "presets")


# ------------------------------------------------------------------------------------------------ remaining error paths


def test_unreadable_file(here, monkeypatch):
    write(here, RULES_OK)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("lrpaudit.files.os.open", denied)
    with pytest.raises(ConfigError, match=r"^lrp\.yaml: cannot read: Permission denied$"):
        load_config("lrp.yaml")


@pytest.mark.parametrize(
    ("text", "prefix", "fragment"),
    [
        ("version: 1\nextends: 5\n", "lrp.yaml:2:10: extends:", "expected a string, got number 5"),
        ("version: 1\na: !!int abc\n", "lrp.yaml:2:4: a:", "not an integer: 'abc'"),
        ("version: 1\na: !!bool yes\n", "lrp.yaml:2:4: a:", "not a boolean: 'yes'"),
        ("version: 1\na: !!float abc\n", "lrp.yaml:2:4: a:", "not a number: 'abc'"),
        (
            "version: 1\nrules:\n  - match: {op: linear}\n    rule: zbox\n    low: [0, 0]\n    high: [1, 1, 1]\n",
            "lrp.yaml:6:11: rules[0].high:",
            "low and high have shapes that do not broadcast",
        ),
    ],
)
def test_more_value_errors(here, text, prefix, fragment):
    assert_error(text, here, prefix, fragment)


def test_aliases_that_expand_past_the_node_limit(here):
    lines = ["version: 1", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)]
    assert_error("\n".join(lines) + "\n", here, "lrp.yaml:", "document too large (over 100000 nodes")


def test_config_and_preset_together():
    with pytest.raises(ConfigError, match=r"give a config file or a preset, not both .*extends: zero"):
        load_config("lrp.yaml", "zero")


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"colour": "red"}, "command line: unknown setting 'colour' (settings:"),
        ({"gate": "loose"}, "command line: gate must be one of strict, explained, got 'loose'"),
        ({"layer_rtol": 0.0}, "command line: layer_rtol must be a finite number > 0, got 0.0"),
        ({"end_to_end_rtol": float("nan")}, "end_to_end_rtol must be a finite number > 0, got nan"),
        ({"target": -1}, "command line: target must be 'predicted' or a class index >= 0, got -1"),
        ({"target": True}, "target must be 'predicted' or a class index >= 0, got True"),
    ],
)
def test_command_line_overrides_are_checked(values, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(preset="zero").with_overrides(**values)
    assert fragment in str(info.value)


def test_long_strings_are_quoted_briefly(here):
    error = config_error("version: 1\nexplain: " + "x" * 500 + "\n", here)
    assert len(str(error)) < 250 and "..." in str(error)


# ------------------------------------------------------------------------------------------------ transformer ops


def test_transformer_rules_in_a_config(here):
    """The new ops are matched by name like any op; their rules take their own parameters and bias modes."""
    from tests.helpers.transformer_ir import transformer

    write(
        here,
        """
        version: 1
        bias: ignore
        rules:
          - match: {op: linear}
            rule: zero
          - match: {op: layernorm}
            rule: norm_identity
            bias: distribute
          - match: {name: "blocks.0.attn.context"}
            rule: constant_factor
            factor: 0
          - match: {op: [matmul, einsum, mul]}
            rule: uniform
            epsilon: 1.0e-3
        """,
    )
    model = transformer("vit", seed=1)
    assignment = load_config("lrp.yaml").assign(model.graph)
    rules, sources = assignment.rules, assignment.sources
    assert (rules["blocks.0.ln1"].name, rules["blocks.0.ln1"].bias) == ("norm_identity", "distribute")
    assert (
        rules["blocks.0.attn.context"].get("factor") == 0 and rules["blocks.0.attn.scores"].name == "uniform"
    )
    assert rules["blocks.0.attn.softmax"].name == "taylor" and sources["blocks.0.attn.softmax"] == "default"
    assert (
        rules["embed.pos"].name == "bias_neuron" and rules["embed.pos"].bias == "ignore"
    )  # the default mode
    assert sources["blocks.0.attn.context"] == "lrp.yaml:9"
    assert assignment.warnings == []


@pytest.mark.parametrize(
    ("entry", "path", "fragment"),
    [
        (
            "{op: softmax}\n    rule: uniform",
            "rules[0].match.op[0]",
            "rule 'uniform' does not apply to op 'softmax'",
        ),
        (
            "{op: matmul}\n    rule: constant_factor\n    factor: 2",
            "rules[0]",
            "factor must be -1 (auto), 0 or 1",
        ),
        ("{op: layernorm}\n    rule: norm_identity\n    alpha: 1", "rules[0].alpha", "takes: epsilon"),
        ("{op: layer_norm}\n    rule: norm_identity", "rules[0].match.op[0]", "did you mean 'layernorm'"),
        ("{position: first}\n    rule: taylor", "rules[0].match.position", "rule 'taylor' does not apply"),
    ],
)
def test_transformer_rule_errors_name_the_entry(here, entry, path, fragment):
    assert_error(f"version: 1\nrules:\n  - match: {entry}\n", here, "lrp.yaml:", path, fragment)
