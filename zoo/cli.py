"""What the command lines share: one way to declare them, the run flags, config resolution and the one error
boundary.

Every command line (``zoo.*``, ``eval.*``, ``benchmarks.*``) is declared with :func:`command_parser` (the only
place an ``argparse.ArgumentParser`` is built) and run with :func:`run_command`. ``python -m zoo.train``,
``zoo.cv``, ``zoo.hparam`` and ``zoo.outcome`` take the same run flags (:func:`run_parser`: ``--config``,
``--workdir``, ``--model``, ``--steps``, ...) and ``--config.a.b=value`` overrides: this module is the one
parser of that syntax (``zoo.configs.apply_overrides`` gives the values their fields' types). :func:`run_cli`
is the boundary every entry point's ``main`` goes through: bad input (``ValueError``), missing or unwritable
files (``OSError``) and invalid configs end with one line ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Callable

import ml_collections

from zoo import compilation_cache, sharding
from zoo.configs import apply_overrides, load_config
from zoo.registry import get_spec

__all__ = ["command_parser", "run_command", "run_parser", "resolve_config", "default_workdir",
           "run_cli", "OverrideParser", "USAGE_ERROR"]

USAGE_ERROR = 2

# Shortcut flag -> config field.
_SHORTCUTS = (("model", "model.name"), ("dataset", "data.name"), ("data_dir", "data.data_dir"),
              ("mesh", "mesh.shape"), ("steps", "train.steps"))


class OverrideParser(argparse.ArgumentParser):
    """A command line that also takes ``--config.a.b=value`` overrides: ``parse_args`` returns the flags with
    ``overrides``, ``{"a.b": "value"}`` in the order given; each shortcut flag of ``shortcuts`` (``(flag, field)``
    pairs) that was given becomes an override of its field unless that field is overridden explicitly. Any other
    unknown argument is a usage error (exit 2)."""

    shortcuts: tuple = ()

    def parse_args(self, args=None, namespace=None):
        known, rest = self.parse_known_args(args, namespace)
        overrides = {}
        for arg in rest:
            if not arg.startswith("--config.") or "=" not in arg:
                self.error(f"unrecognised argument {arg!r} (overrides look like --config.train.steps=100)")
            key, value = arg[len("--config."):].split("=", 1)
            overrides[key] = value
        for flag, field in self.shortcuts:
            if getattr(known, flag, None) is not None:
                overrides.setdefault(field, getattr(known, flag))
        known.overrides = overrides
        return known


def command_parser(prog: str, doc: str | None, *, out: str | None = None, out_required: bool = False,
                   out_default: str | None = None, overrides: bool = False, **kwargs) -> argparse.ArgumentParser:
    """The one way a command line is declared: ``prog`` (``python -m pkg.mod``), the description from the first
    line of the module's docstring ``doc``, ``--out`` when ``out`` (its help) is given (required, or defaulting to
    ``out_default``), and ``--config.a.b=value`` overrides when ``overrides`` (an :class:`OverrideParser`)."""
    description = (doc or "").strip().splitlines()[0] if (doc or "").strip() else None
    p = (OverrideParser if overrides else argparse.ArgumentParser)(prog=prog, description=description, **kwargs)
    if out is not None:
        p.add_argument("--out", required=out_required, default=None if out_required else out_default, help=out)
    return p


def run_command(parser: argparse.ArgumentParser, argv, body: Callable[[argparse.Namespace], int | None]) -> int:
    """Parse ``argv`` (usage errors: argparse's message and exit 2), then run ``body(args)`` inside the one error
    boundary :func:`run_cli`; ``None`` from ``body`` is exit 0. JAX's persistent compilation cache is turned on
    first (:mod:`zoo.compilation_cache`; ``MEDZOO_COMPILATION_CACHE=0`` turns it off)."""
    args = parser.parse_args(argv)
    compilation_cache.enable()
    return run_cli(lambda: body(args) or 0)


def run_parser(prog: str, doc: str, default_config: str = "default", **kwargs) -> OverrideParser:
    """:func:`command_parser` with the run flags every training command takes and ``--config.a.b=value``
    overrides; its ``parse_args`` turns the shortcut flags (``--model``, ``--steps``...) into overrides."""
    p = command_parser(prog, doc, overrides=True, **kwargs)
    p.shortcuts = _SHORTCUTS
    p.add_argument("--config", default=default_config, help=f"recipe name in zoo/configs (default: {default_config})")
    p.add_argument("--workdir", default="", help="output directory (default: workdirs/<config>-<time>)")
    p.add_argument("--model", default=None, help="shortcut for --config.model.name")
    p.add_argument("--dataset", default=None, help="shortcut for --config.data.name")
    p.add_argument("--data_dir", default=None, help="shortcut for --config.data.data_dir")
    p.add_argument("--mesh", default=None, help="DATA,MODEL mesh shape, shortcut for --config.mesh.shape")
    p.add_argument("--steps", default=None, help="shortcut for --config.train.steps")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return p


def resolve_config(known, overrides) -> ml_collections.ConfigDict:
    """Recipe + flag overrides, validated without touching devices (raises ``ValueError``)."""
    config = load_config(known.config)
    if known.model is not None and known.model != config.model.name:
        # The recipe's model kwargs belong to its own model; another model starts from its defaults.
        config.model.kwargs = ml_collections.ConfigDict()
    if "mesh.shape" in overrides:  # "4,2" from --mesh; validated here for a one-line error
        overrides = dict(overrides)
        config.mesh.shape = sharding.parse_mesh_shape(overrides.pop("mesh.shape"))
    config = apply_overrides(config, overrides)
    get_spec(config.model.name)
    return config


def default_workdir(known, config, prefix: str = "") -> str:
    workdir = known.workdir or config.get("workdir", "") or os.path.join(
        "workdirs", f"{prefix}{known.config}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"--workdir {workdir} exists and is not a directory")
    return workdir


def run_cli(fn: Callable[[], int]) -> int:
    """Run an entry point's body; bad input and OS errors become one line on stderr and exit 2, an error that
    carries its own ``exit_code`` (a non-finite loss: 3) one line and that code."""
    try:
        return fn()
    except (ValueError, OSError) as e:
        msg = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror and e.filename else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return USAGE_ERROR
    except RuntimeError as e:
        if getattr(e, "exit_code", None) is None:
            raise
        print(f"error: {e}", file=sys.stderr)
        return int(e.exit_code)
