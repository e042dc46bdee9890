"""Strict YAML reading: a preset's data and node tree (for line numbers), or one ConfigError line
naming the file, line and column. Below both the plan (lsqueeze.config) and the validation
(lsqueeze.schema), which read presets through it."""

from __future__ import annotations

from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: plain
    PyYAML keeps the last value silently, so a second `sigma:` would quietly replace the first."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may repeat
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                mark = key_node.start_mark
                if first is not None:
                    raise ConfigError(f"{self.name}:{mark.line + 1}:{mark.column + 1}: duplicate key "
                                      f"{key!r} (first given on line {first.line + 1})")
                seen[key] = mark
        return super().construct_mapping(node, deep)


def read_yaml(path) -> tuple[object, yaml.Node | None]:
    """(data, node tree) of a YAML (or JSON) file; any problem is a one-line ConfigError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    loader = StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()
    return data, node
