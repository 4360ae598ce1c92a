"""The training and evaluation engine: config, loop, checkpoints, logging, evaluation."""

from .checkpoint import (CheckpointError, atomic_write_bytes, atomic_write_text, check_pair, load_state, load_weights,
                         remove_stale_temporaries, save_state, save_weights, sync_weights_with_state, weights_step)
from .config import (Config, ConfigError, check_resume_config, config_faces, load_config, resume_changes,
                     resume_differences, resume_error_message)
from .evaluation import evaluate_run, load_model, load_run_config
from .memory import retain_freed_memory

__all__ = ["CheckpointError", "Config", "atomic_write_bytes", "atomic_write_text", "ConfigError", "check_pair", "check_resume_config", "config_faces",
           "evaluate_run", "load_config", "load_model", "load_run_config", "load_state", "load_weights",
           "remove_stale_temporaries", "resume_changes", "resume_differences", "resume_error_message",
           "retain_freed_memory", "save_state", "save_weights", "sync_weights_with_state", "weights_step", "main"]


def main(cfg):
    from .trainer import main as _main

    return _main(cfg)
