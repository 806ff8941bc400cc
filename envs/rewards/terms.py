"""The shipped reward terms. Each returns a raw value; weights live in the config."""

from __future__ import annotations

from concurrent.futures import Future

from envs.rewards.registry import RewardContext, reward_term


@reward_term("pass_rate", span="code")
def pass_rate(ctx: RewardContext) -> float:
    """Fraction of unit tests the reply's code passes (0 when there was no code)."""
    return ctx.verdict.pass_rate if ctx.verdict is not None else 0.0


@reward_term("all_passed", span="code")
def all_passed(ctx: RewardContext) -> float:
    """1 when every unit test passes, else 0."""
    return 1.0 if ctx.verdict is not None and ctx.verdict.passed else 0.0


@reward_term("format", span="turn")
def format_penalty(
    ctx: RewardContext,
    no_code: float = -1.0,
    syntax_error: float = -1.0,
    unfenced: float = -0.5,
) -> float:
    """Penalty for a reply without a code block, with code that does not parse, or with
    code recovered without a fence; 0 for a well-formed reply."""
    if not ctx.reply.has_code:
        return no_code
    if ctx.reply.syntax_error is not None:
        return syntax_error
    return 0.0 if ctx.reply.fenced else unfenced


@reward_term("turn_cost", span="turn")
def turn_cost(ctx: RewardContext, cost: float = 1.0) -> float:
    """A constant -cost per reply, so that fixing in fewer turns is worth more."""
    return -cost


@reward_term("constant", span="turn")
def constant(ctx: RewardContext, value: float = 1.0) -> float:
    """A fixed value (the offsets of the LeDex formulas are constants on a span)."""
    return value


@reward_term("codebleu", span="code")
def codebleu(
    ctx: RewardContext,
    weights: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25),
    worker: bool = True,
) -> float | Future[float]:
    """CodeBLEU (the `codebleu` package, lang python) of the reply's code, max over the
    verified reference fixes; 0 without code or references. `worker`: compute it in the
    process's reward worker (envs/rewards/worker.py), off the generation path (the term
    then returns a Future)."""
    from envs.rewards.codebleu import max_codebleu

    if not ctx.reply.has_code or not ctx.references.codes:
        return 0.0
    args = (ctx.reply.code or "", tuple(ctx.references.codes), tuple(weights))
    return _in_worker("codebleu", *args) if worker else max_codebleu(*args)


@reward_term("explanation_similarity", span="explanation")
def explanation_similarity(
    ctx: RewardContext, model: str = "default", worker: bool = True
) -> float | Future[float]:
    """Cosine similarity of sentence embeddings between the reply's explanation and the
    reference explanations, max over them; 0 without explanation or references.
    `model`: "default" (all-MiniLM-L6-v2, bundled offline), a local path or a hub name
    (e.g. "sentence-transformers/all-roberta-large-v1" as in the LeDex paper).
    `worker`: as for `codebleu`; the worker loads the model once for all env copies."""
    from envs.rewards.similarity import max_cosine

    if not ctx.reply.explanation.strip() or not ctx.references.explanations:
        return 0.0
    args = (ctx.reply.explanation, tuple(ctx.references.explanations), model)
    return _in_worker("cosine", *args) if worker else max_cosine(*args)


def _in_worker(kind: str, *args: object) -> Future[float]:
    from envs.rewards.worker import reward_worker

    return reward_worker().submit(kind, *args)
