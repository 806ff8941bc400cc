"""The learner: SFT warm-start and PPO on a DeepSpeed engine, behind `LearnerBackend`.

Heavy modules (DeepSpeed, Ray) load lazily: import them from their submodules.
"""

from actorlearner.learner.config import LearnerConfig, LoRAConfig, PPOConfig, SFTConfig

__all__ = ["LearnerConfig", "LoRAConfig", "PPOConfig", "SFTConfig"]
