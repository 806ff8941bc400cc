"""Bad input the user can fix: one line naming the problem and the fix, exit status 2."""

from __future__ import annotations

from typing import NoReturn

import typer


class UsageError(Exception):
    """Bad input the user can fix; the command prints it as one line and exits 2."""


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(2)


def load_benchmark(spec: str, max_problems: int = 0) -> list:
    """The problems of `spec`; any input error becomes a `UsageError` (one line)."""
    from envs.benchmarks.expected import ReferenceError
    from envs.benchmarks.generic import GenericFormatError
    from envs.sources import load_problems

    try:
        problems = load_problems(spec)
    except (GenericFormatError, ReferenceError, OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except KeyError as exc:
        raise UsageError(str(exc.args[0]) if exc.args else repr(exc)) from None
    return problems[:max_problems] if max_problems else problems
