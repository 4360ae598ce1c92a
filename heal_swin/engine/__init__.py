"""The training and evaluation engine: config, loop, checkpoints, logging, evaluation."""

from .checkpoint import load_state, load_weights, save_state, save_weights
from .config import Config, ConfigError, load_config
from .evaluation import evaluate_run, load_model
from .memory import retain_freed_memory

__all__ = ["Config", "ConfigError", "evaluate_run", "load_config", "load_model", "load_state", "load_weights",
           "retain_freed_memory", "save_state", "save_weights", "main"]


def main(cfg):
    from .trainer import main as _main

    return _main(cfg)
