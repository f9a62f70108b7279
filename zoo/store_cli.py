"""The model store's command line: ``python -m zoo.store_cli list`` (every entry, one line each) and
``python -m zoo.store_cli show NAME [--json]`` (one entry's card: what it is, its data and licence, how it was
trained and, for an entry refit after cross-validation, the cross-validated metrics per fold and their mean ±
std, the folds' held-out patients, the splitter and its seed; ``--json``: the card as stored).

Only the command line lives here; the store is :mod:`zoo.store`, the card's reading :mod:`zoo.cards`. An unknown
name is one ``error:`` line naming the close matches, exit 2.
"""

from __future__ import annotations

import sys

from data_pipelines.atomic import dumps
from zoo.cards import cross_validation_lines
from zoo.cli import command_parser, run_command
from zoo.store import list_pretrained, resolve, store_home

__all__ = ["main"]


def _show(entry) -> list[str]:
    c = entry.card
    data = c.get("data") if isinstance(c.get("data"), dict) else {"name": c.get("data", "?")}
    lines = [f"{entry.name} ({entry.source}: {entry.path})",
             f"model: {c.get('model', '?')} ({c.get('task', '?')}), step {c.get('step', '?')}",
             f"data: {data.get('name', '?')}" + (f"; classes {', '.join(data['class_names'])}"
                                                  if data.get("class_names") else ""),
             f"licence: {c.get('data_licence') or c.get('licence') or 'not stated on the card'}"]
    for key in ("recipe", "intended_use", "created"):
        if c.get(key):
            lines.append(f"{key.replace('_', ' ')}: {c[key]}")
    training = c.get("training")
    if isinstance(training, str):
        lines.append(f"training: {training}")
    metrics = c.get("metrics") or {}
    shown = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    lines.append("metrics: " + (", ".join(shown) or "none recorded")
                 + (f" ({metrics['split']})" if metrics.get("split") else ""))
    return lines + cross_validation_lines(c)


def _run(args) -> int:
    if args.action == "list":
        if args.name:
            raise ValueError(f"'list' takes no name (got {args.name!r}); use 'show {args.name}'")
        entries = list_pretrained()
        for e in entries:
            print(f"{e.summary} [{e.source}]")
        if not entries:
            print(f"the model store is empty ($ZOO_HOME={store_home()})")
        return 0
    if not args.name:
        raise ValueError("'show' needs a store name, e.g. 'python -m zoo.store_cli show unet-isic'")
    path = resolve(args.name)  # unknown names: the close matches
    entry = next((e for e in list_pretrained() if e.path == path), None)
    if entry is None:
        raise ValueError(f"{args.name!r} is a path, not a model store entry; 'show' takes a store name")
    print(dumps(entry.card, indent=1) if args.json else "\n".join(_show(entry)))
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m zoo.store_cli", __doc__)
    p.add_argument("action", choices=("list", "show"))
    p.add_argument("name", nargs="?", default=None, help="store entry (show)")
    p.add_argument("--json", action="store_true", help="show: print the card as stored")
    return run_command(p, argv, _run)


if __name__ == "__main__":
    sys.exit(main())
