"""The training loop's hooks, one role each: the non-finite policy, logging (console,
metrics.jsonl, TensorBoard), checkpoints, evaluation and stop signals."""

from detection.engine.hooks.checkpoint import CheckpointHook
from detection.engine.hooks.evaluation import EvalHook
from detection.engine.hooks.logging import LoggingHook, TrainLog, peak_memory_mb
from detection.engine.hooks.nonfinite import NonFinitePolicy, NonFiniteStepError
from detection.engine.hooks.signals import SignalHook, StopSignals, TrainingInterrupted

__all__ = [
    "CheckpointHook",
    "EvalHook",
    "LoggingHook",
    "NonFinitePolicy",
    "NonFiniteStepError",
    "SignalHook",
    "StopSignals",
    "TrainLog",
    "TrainingInterrupted",
    "peak_memory_mb",
]
