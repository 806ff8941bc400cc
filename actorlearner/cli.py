"""`actorlearner` command line. Each stage lives in `actorlearner/commands/<name>.py`
and exposes `register(app)`; imports stay lazy so `--help` is instant."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
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


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
