"""Argument types of MBPP+ inputs that JSON could not keep.

The MBPP+ file stores inputs as JSON, so tuples, sets, complex numbers and tuple-valued
dicts arrive as lists and strings. EvalPlus restores them per task before running
anything; without that, a correct solution that does `tup + (x,)` would crash on a
list. This table records, per MBPP task number, how each input's arguments are rebuilt.
"""

from __future__ import annotations

from collections.abc import Callable

Args = list


def _tuple_deep(x):
    return tuple(_tuple_deep(v) for v in x) if isinstance(x, list) else x


def _every_arg_tuple(args: Args) -> Args:
    return [tuple(a) for a in args]


def _every_arg_list_of_tuples(args: Args) -> Args:
    return [[tuple(x) for x in a] for a in args]


def _every_arg_tuple_of_tuples(args: Args) -> Args:
    return [tuple(tuple(x) for x in a) for a in args]


def _first_list_of_tuples(args: Args) -> Args:
    return [[tuple(x) for x in args[0]], *args[1:]]


def _first_tuple(args: Args) -> Args:
    return [tuple(args[0]), *args[1:]]


def _second_tuple(args: Args) -> Args:
    return [args[0], tuple(args[1]), *args[2:]]


def _sets_or_empty_dicts(args: Args) -> Args:  # task 115: "are all dicts in the list empty?"
    return [[set(x) if isinstance(x, list) and x else {} for x in args[0]]]


def _float_and_complex(args: Args) -> Args:
    return [float(args[0]), complex(args[1])]


def _complex(args: Args) -> Args:
    return [complex(args[0])]


def _tuple_of_mixed(args: Args) -> Args:  # task 278: a tuple whose list items are tuples
    return [tuple(tuple(x) if isinstance(x, list) else x for x in args[0])]


def _dict_of_tuples(args: Args) -> Args:
    return [{k: tuple(v) for k, v in args[0].items()}, *args[1:]]


def _all_tuples(args: Args) -> Args:
    return [_tuple_deep(a) for a in args]


_GROUPS: list[tuple[Callable[[Args], Args], tuple[int, ...]]] = [
    (
        _every_arg_tuple,
        (
            2,
            116,
            132,
            143,
            222,
            261,
            273,
            394,
            399,
            421,
            424,
            429,
            470,
            560,
            579,
            596,
            616,
            630,
            726,
            740,
            744,
            809,
        ),
    ),
    (
        _every_arg_list_of_tuples,
        (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
    ),
    (_first_list_of_tuples, (75, 413, 444, 753)),
    (_second_tuple, (106, 750)),
    (_sets_or_empty_dicts, (115,)),
    (_float_and_complex, (124,)),
    (_first_tuple, (250, 307, 405, 446, 617, 720, 763, 808)),
    (_every_arg_tuple_of_tuples, (259, 401, 445)),
    (_tuple_of_mixed, (278,)),
    (_dict_of_tuples, (722,)),
    (_complex, (252,)),
    (_all_tuples, (580, 615, 791)),
]
ARG_TYPES: dict[int, Callable[[Args], Args]] = {n: fn for fn, ids in _GROUPS for n in ids}


def restore_args(task_number: int, args: Args) -> Args:
    """The arguments of one MBPP+ input with their original Python types."""
    fix = ARG_TYPES.get(task_number)
    return fix(list(args)) if fix else list(args)
