"""The preset schema's enums (lsqueeze/data/schema.json) are the package's registries: a new dataset,
architecture, attack, loss or figure kind is added in its module, and this test names the schema
line to extend with it."""

import json

import pytest

from conftest import REPO
from lsqueeze import cli
from lsqueeze.jobs import data
from lsqueeze.plan import build as config
from lsqueeze.registries import attack_kinds, figure_kinds
from lsqueeze.runtime import integrity
from lsqueeze.science import models, pgd

SCHEMA = json.loads((REPO / "src/lsqueeze/data/schema.json").read_text())


def enums(node, path=()):
    """{json path: enum values} of every enum in the schema."""
    if isinstance(node, dict):
        if "enum" in node:
            yield "/".join(path), node["enum"]
        for key, value in node.items():
            yield from enums(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from enums(value, (*path, str(i)))


ENUMS = dict(enums(SCHEMA))


def enum_at(suffix: str) -> list:
    (values,) = [v for path, v in ENUMS.items() if path.endswith(suffix)]
    return values


@pytest.mark.parametrize("suffix, registry", [
    ("arch/properties/name", models.ARCHS),
    ("properties/loss", tuple(pgd.LOSSES)),
])
def test_schema_enum_is_the_registry(suffix, registry):
    assert sorted(enum_at(suffix)) == sorted(registry), f"lsqueeze/data/schema.json {suffix}"


def test_datasets_are_the_recipes():
    """The schema's dataset enum is filled in from the recipes when a preset is validated."""
    from lsqueeze.plan.schema import ConfigError, load_schema, validate

    assert "enum" not in SCHEMA["$defs"]["dataset"]
    assert load_schema()["$defs"]["dataset"]["enum"] == list(config.RECIPES)
    bad = {"results": "results/x", "cells": {"c": {"dataset": "svhn", "steps": 1}}}
    with pytest.raises(ConfigError, match="svhn"):
        validate(bad)


def test_attack_kinds_and_their_settings_are_the_registry():
    """The schema's attack enum and each kind's own settings (AutoAttack's version) are filled in
    from lsqueeze.registries.attack_kinds when a preset is validated."""
    from lsqueeze.plan.schema import ConfigError, load_schema, validate

    props = load_schema()["$defs"]["attack"]["properties"]
    assert "enum" not in SCHEMA["$defs"]["attack"]["properties"]["attack"]
    assert props["attack"]["enum"] == list(attack_kinds.ATTACK_KINDS) == ["fgsm", "pgd", "autoattack"]
    assert props["version"]["enum"] == list(attack_kinds.AUTOATTACK_VERSIONS)
    figure = load_schema()["properties"]["figures"]["additionalProperties"]["properties"]["kind"]
    assert figure["enum"] == list(figure_kinds.FIGURE_KINDS)
    preset = config.load_config(REPO / "tests" / "config" / "tiny.yaml")
    for bad, word in (({"attack": "square", "eps": 0.3}, "square"),
                      ({"attack": "pgd", "eps": 0.3, "step_size": 0.1, "version": "plus"}, "version")):
        with pytest.raises(ConfigError, match=word):
            validate({**preset, "attacks": {**preset["attacks"], "aa": bad}})


def test_a_new_cell_value_with_a_default_is_a_valid_preset_key(monkeypatch):
    """A defense's parameter is added in lsqueeze/plan/build.py (CELL_DEFAULTS, cell_tag) only."""
    from lsqueeze.plan.schema import ConfigError, validate

    def tiny_with(gamma):
        preset = config.load_config(REPO / "tests" / "config" / "tiny.yaml")
        preset["cells"]["smooth"]["gamma"] = gamma
        return preset

    with pytest.raises(ConfigError, match="gamma"):
        validate(tiny_with(0.5))
    monkeypatch.setitem(config.CELL_DEFAULTS, "gamma", 0.0)
    validate(tiny_with(0.5))
    with pytest.raises(ConfigError, match="gamma"):
        validate(tiny_with(-1))


def test_registries_agree_with_each_other():
    assert set(config.RECIPES) == set(data.DATASETS)  # every dataset has its recipe (one registry)
    figure = cli._parser()._subparsers._group_actions[0].choices["figure"]
    kind = next(a for a in figure._actions if a.dest == "kind")
    assert set(kind.choices) == {"summary", *figure_kinds.FIGURE_KINDS}  # without matplotlib
    assert sorted(ENUMS["properties/device"]) == sorted(integrity.DEVICE_POLICIES)
