"""`actorlearner` command line. Each stage lives in `actorlearner/commands/<name>.py`
and exposes `register(app)`; imports stay lazy so `--help` is instant."""

from __future__ import annotations

import importlib
import logging
import os

import typer

# Quiet defaults for every process of a run (Ray workers inherit them via the runtime env):
# per-model-load progress bars and accelerator probing say nothing a user needs.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}
for _key, _value in QUIET_ENV.items():
    os.environ.setdefault(_key, _value)

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
    from rich.logging import RichHandler

    logging.basicConfig(
        level=os.environ.get("ACTORLEARNER_LOG", "INFO"),
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )
    app()


if __name__ == "__main__":
    main()
