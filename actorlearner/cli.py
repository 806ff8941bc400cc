"""`actorlearner` command line. Each stage lives in `actorlearner/commands/<name>.py`
and exposes `register(app)`; imports stay lazy so `--help` is instant."""

from __future__ import annotations

import importlib
import logging
import os

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

# Quiet defaults for every process of a run (Ray workers inherit them via the runtime env):
# per-model-load progress bars and accelerator probing say nothing a user needs.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)


def _flag_help(option):  # type: ignore[no-untyped-def]
    """The help flag takes no value: an empty type column rather than typer's `<bool>`."""
    if option is not None:
        option.metavar = ""
    return option


class Group(TyperGroup):
    """The top-level command list, with the same help rows as its commands."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _flag_help(super().get_help_option(ctx))


class Command(TyperCommand):
    """A command whose help rows show our metavars, not typer's Python types (`<bool>` for
    the help flag, `<list[str]>` beside a named positional argument)."""

    def get_help_option(self, ctx):  # type: ignore[no-untyped-def]
        return _flag_help(super().get_help_option(ctx))

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument) and param.metavar:
                param.__class__ = _NamedArgument
        return params


class _NamedArgument(TyperArgument):
    """A positional argument whose metavar, shown as its name, says what it takes."""

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None


app = typer.Typer(
    cls=Group,
    help="Train code LLMs to explain and fix their own code with online RL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Stage modules; each adds its own command(s) to `app`.
COMMAND_MODULES = [
    "actorlearner.commands.evaluate",
    "actorlearner.commands.collect",
    "actorlearner.commands.stages",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a stage not built yet must not break the others
            if exc.name != name:
                raise
            continue
        module.register(app)
    for info in app.registered_commands:  # typer's default class, or none named
        if info.cls in (None, TyperCommand):
            info.cls = Command


_register()


def main() -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=os.environ.get("ACTORLEARNER_LOG", "INFO"),
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    app()


if __name__ == "__main__":
    main()
