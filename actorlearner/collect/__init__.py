"""LeDex data collection: sample, execute, explain + refine, verify.

    actorlearner collect --problems mbpp:train --policy MODEL_DIR \\
        --refiner teacher --teacher-url http://127.0.0.1:8000/v1 --teacher-model NAME \\
        --out runs/collect

or from Python: `run_collect(CollectConfig(...))`. One problem is one unit of work,
done by a Ray worker (`runner.Collector`) and stored as one fsynced line of
`units.jsonl`; a rerun with the same `--out` skips finished units. At the end every
dataset is rebuilt from the units and written atomically:

- `sft.jsonl`: verified explain-then-refine replies (success trajectories):
  {task_id, source, messages: [system, user, assistant], explanation, code, wrong_code}
- `failures.jsonl`: replies that do not pass (failure trajectories), with status/feedback
- `pool.jsonl`: the RL pool, one wrong solution per line with verified references
- `references.jsonl`: per problem, every distinct verified fix with its explanation
- `correct.jsonl`: correct initial solutions as code-generation examples
- `summary.json` (Table 1 of the paper) and `provenance.json`
"""

from actorlearner.collect.config import CollectConfig, from_run_config
from actorlearner.collect.runner import run_collect

__all__ = ["CollectConfig", "from_run_config", "run_collect"]
