"""``fcnkit recipes``: list the shipped training recipes, or show one.

``fcnkit recipes`` lists them; ``fcnkit recipes show NAME`` (or ``fcnkit recipes NAME``)
prints one resolved, its ``_base_`` recipes merged, as YAML to copy, edit and
``fcnkit train FILE``; ``--raw`` prints the file as written (``_base_`` and comments).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnkit.cli import CLIError


def register(subparsers: argparse._SubParsersAction) -> None:
    r = subparsers.add_parser(
        "recipes",
        help="list the shipped training recipes, or show one",
        description="`fcnkit recipes` lists the recipes; `fcnkit recipes show NAME` (or "
        "`fcnkit recipes NAME`) prints one as YAML, to copy, edit and `fcnkit train FILE`: "
        "resolved (its `_base_` recipes merged), or as written with --raw. NAME may also be a "
        "YAML file, to see what its `_base_` chain resolves to.",
    )
    r.add_argument(
        "action",
        nargs="?",
        default="list",
        metavar="list | show | NAME",
        help="list (default), show NAME, or a recipe name to show",
    )
    r.add_argument("name", nargs="?", help="the recipe (or YAML file) to show (with `show`)")
    r.add_argument(
        "--raw",
        action="store_true",
        help="show the file as written (its `_base_` line and comments), bases not merged",
    )
    r.set_defaults(func=run_recipes)


def run_recipes(args: argparse.Namespace) -> int:
    from fcnkit.engine.config import ConfigError, list_recipes, recipe_description

    if args.action == "list" and args.name is None:
        if args.raw:
            raise CLIError("usage: fcnkit recipes show NAME --raw (see `fcnkit recipes`)")
        names = list_recipes()
        width = max(len(n) for n in names)
        for name in names:
            print(f"{name:<{width}}  {recipe_description(name)}")
        print("\n`fcnkit recipes show NAME` prints one (copy it, edit it, `fcnkit train FILE`).")
        return 0
    if args.action in ("list", "show"):
        name = args.name
        if name is None:
            raise CLIError("usage: fcnkit recipes show NAME (see `fcnkit recipes`)")
    elif args.name is not None:
        raise CLIError(f"usage: fcnkit recipes show NAME; got {args.action!r} {args.name!r}")
    else:
        name = args.action  # `fcnkit recipes NAME`
    try:
        print(recipe_yaml(name, raw=args.raw), end="")
    except ConfigError as err:
        raise CLIError(str(err)) from None
    return 0


def recipe_yaml(source: str, raw: bool = False) -> str:
    """A recipe (or YAML file) as YAML: resolved (bases merged, validated) or as written.

    A file without ``_base_`` is already resolved: its text is shown, comments and all.
    """
    from fcnkit.engine.config import load_config, recipe_text, resolve_source

    path = Path(source)
    text = path.read_text() if path.is_file() else None
    if raw:
        return text if text is not None else recipe_text(source)
    resolved = resolve_source(source)
    load_config(source)  # a resolved recipe that does not validate is an error, not output
    if len(resolved.files) == 1:
        return text if text is not None else recipe_text(source)
    chain = " <- ".join(f.removeprefix("recipe ") for f in resolved.files)
    header = (
        f"# {source} resolved: {chain} (later files win).\n"
        f"# As written, with the comments that explain the values: "
        f"fcnkit recipes show {source} --raw\n"
    )
    return header + _to_yaml(resolved.data)


def _to_yaml(data: dict) -> str:
    """Sections in block style, their values one per line; keys in the config's field order."""
    import dataclasses
    import textwrap
    import typing

    import yaml

    from fcnkit.engine.config import Config

    def ordered(mapping: dict, cls: type) -> list[tuple[str, object]]:
        names = [f.name for f in dataclasses.fields(cls)]
        return sorted(mapping.items(), key=lambda kv: names.index(kv[0]))

    def line(key: str, value: object) -> str:
        if isinstance(value, (dict, list)) and value:
            flow = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000)
            return f"{key}: {flow.strip()}\n"
        return yaml.safe_dump({key: value}, sort_keys=False, width=1000)

    sections = typing.get_type_hints(Config)
    out = []
    for key, value in ordered(data, Config):
        if isinstance(value, dict) and value and dataclasses.is_dataclass(sections[key]):
            out.append(f"{key}:\n")
            out += [textwrap.indent(line(k, v), "  ") for k, v in ordered(value, sections[key])]
        else:
            out.append(line(key, value))
    return "".join(out)
