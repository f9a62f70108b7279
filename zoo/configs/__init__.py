"""Training recipes as plain Python (big_vision style).

Each module ``zoo/configs/NAME.py`` defines ``get_config() -> ml_collections.ConfigDict``.
``load_config(NAME)`` imports it; a module whose ``get_config(arg)`` takes an argument and which lists its
variants in ``names()`` builds a family of recipes: ``load_config("paper_unet_isic")`` is
``paper.get_config("unet_isic")``; :func:`apply_overrides` applies ``{"field.path": "value"}`` strings
(the ``--config.field.path=value`` overrides ``zoo.cli`` parses from a command line, or a study's own), giving
each value its field's type and refusing unknown fields.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import pkgutil

import ml_collections

__all__ = ["load_config", "apply_overrides", "list_configs"]


def list_configs() -> list[str]:
    import zoo.configs as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def _parametrised(name: str, names: list[str]):
    """``(module, arg)`` when ``name`` is ``<module>_<arg>`` of a module listing ``arg`` in its ``names()``."""
    for mod_name in sorted(names, key=len, reverse=True):
        if name.startswith(mod_name + "_"):
            mod = importlib.import_module(f"zoo.configs.{mod_name}")
            arg = name[len(mod_name) + 1:]
            if hasattr(mod, "names") and arg in mod.names():
                return mod, arg
    return None


def load_config(name: str) -> ml_collections.ConfigDict:
    names = list_configs()
    if name not in names:
        found = _parametrised(name, names)
        if found is not None:
            return found[0].get_config(found[1])
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown config {name!r}{hint} (known: {', '.join(names)})")
    return importlib.import_module(f"zoo.configs.{name}").get_config()


def _parse_value(text: str, current):
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, str) or current is None and not _looks_literal(text):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(current, (tuple, list)):
            value = tuple(ast.literal_eval(p) for p in text.split(","))
        else:
            raise ValueError(f"cannot parse {text!r}")
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    if isinstance(current, (tuple, list)) and isinstance(value, (int, float)):
        value = (value,)
    if isinstance(current, tuple) and isinstance(value, list):
        value = tuple(value)
    if current is not None and not isinstance(value, type(current)) and not (
            isinstance(current, (tuple, list)) and isinstance(value, (tuple, list))):
        raise ValueError(f"expected {type(current).__name__}, got {text!r}")
    return value


def _looks_literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
        return True
    except (ValueError, SyntaxError):
        return False


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> ml_collections.ConfigDict:
    """Set ``config.a.b = value`` for each ``"a.b": "value"``; unknown fields raise ``ValueError``."""
    for path, text in overrides.items():
        node = config
        parts = path.split(".")
        for i, part in enumerate(parts):
            if i == len(parts) - 1 and parts[:-1] == ["model", "kwargs"] and part not in node:
                # Model kwargs are open: each model has its own; create_model validates them.
                with node.unlocked():
                    node[part] = _parse_value(text, None)
                break
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                close = difflib.get_close_matches(part, known, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(f"unknown config field {'.'.join(parts[:i + 1])!r}{hint}")
            if i < len(parts) - 1:
                node = node[part]
        else:
            try:
                with node.unlocked():
                    node[parts[-1]] = _parse_value(text, node[parts[-1]])
            except (ValueError, TypeError) as e:
                raise ValueError(f"bad value for config field {path!r}: {e}") from None
    return config
