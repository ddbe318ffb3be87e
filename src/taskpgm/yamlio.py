"""Reading YAML written by people: configs and collection files.

PyYAML's safe loader never builds Python objects, but it keeps the last of two equal
keys without a word and recurses without a bound; :func:`read_yaml` turns both into
errors that say where.
"""

from __future__ import annotations

from typing import Any

import yaml

from taskpgm.errors import ConfigError


def read_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """(data, node tree) of a YAML document; duplicate keys and absurd nesting are errors.

    Raises:
        ConfigError: not valid YAML, a key given twice in one mapping (YAML would keep the
            last silently), or nesting too deep to be a config.
    """
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML ({getattr(err, 'problem', None) or err}"
                          "); fix the syntax") from err
    except RecursionError as err:
        raise ConfigError(f"{source}: YAML nested too deeply to be a config") from err
    # Depth-first over the node graph (aliases share nodes): a node met again on its own
    # path is a cycle; one met again elsewhere was checked already.
    stack: list[tuple[yaml.Node, bool]] = [(node, False)] if node is not None else []
    path: set[int] = set()
    done: set[int] = set()
    while stack:
        current, leaving = stack.pop()
        if leaving:
            path.discard(id(current))
            done.add(id(current))
            continue
        if id(current) in path:
            raise ConfigError(f"{source} line {current.start_mark.line + 1}: an alias refers "
                              "to a mapping or list that contains it; remove it")
        if id(current) in done:
            continue
        path.add(id(current))
        stack.append((current, True))
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                name = str(getattr(key, "value", key))
                if name in seen:
                    raise ConfigError(
                        f"{source} line {key.start_mark.line + 1}: duplicate key {name!r} "
                        f"(first on line {seen[name]}); YAML would silently keep only the "
                        "last one — merge them into one")
                seen[name] = key.start_mark.line + 1
                stack.append((value, False))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((child, False) for child in current.value)
    return data, node
