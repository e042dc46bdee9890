"""Strict YAML reading: a preset's data and node tree (for line numbers), or one ConfigError line
naming the file, line and column. Below both the plan (lsqueeze.plan.build) and the validation
(lsqueeze.plan.schema), which read presets through it."""

from __future__ import annotations

from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


# More values than any preset holds (the paper preset: a few thousand): a file whose aliases
# expand beyond it ("billion laughs") is refused before anything walks its data.
MAX_VALUES = 200_000


def _children(node):
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return node.value
    return []


def check_expansion(root, name, limit: int = MAX_VALUES) -> None:
    """Refuse a node tree that refers to itself or whose aliases expand to more than `limit`
    values: an alias shares its anchor's node, so a few lines can stand for 10^9 values (or an
    endless nesting), which every later walk over the data (validation, the plan) would expand."""
    size, open_ = {}, set()
    stack = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > limit:
                mark = node.start_mark
                raise ConfigError(f"{name}:{mark.line + 1}:{mark.column + 1}: this value holds more "
                                  f"than {limit} values once its aliases are expanded (a preset "
                                  "needs far fewer)")
            continue
        if key in size:
            continue
        if key in open_:
            mark = node.start_mark
            raise ConfigError(f"{name}:{mark.line + 1}:{mark.column + 1}: this value contains itself "
                              "through an alias")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(_children(node)) if id(c) not in size)


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
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # e.g. a Latin-1 é: say where, not the byte offset
        start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw[:exc.start].count(b"\n") + 1
        column = len(raw[start:exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError(f"{path}:{line}:{column}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); "
                          "save the file as UTF-8") from None
    loader = StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expansion(node, path)
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
