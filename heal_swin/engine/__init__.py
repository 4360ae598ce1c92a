"""The training and evaluation engine: config, the run's pieces (data sources, model, loss, optimiser),
the one training loop, evaluation, checkpoints, logging, processes and devices.

    cfg = load_config("configs/digits_gauge_cnn.yaml", ["train.max_steps=50"])
    result = main(cfg)                                   # train (or resume) cfg.run.dir; the last evaluation
                                                         # and result['train_seconds'] (a resumed run's parts)
    model = load_model("runs/x")                         # a trained run's model
    evaluate(model, dataset, task="segmentation")        # metrics of any model on any dataset
"""

from .builders import (DATA_SOURCE_BUILDERS, build_datasets, build_loss, build_model, build_optimizer, model_domain,
                       num_outputs)
from .checkpoint import (CheckpointError, atomic_write_bytes, atomic_write_text, check_pair, is_snapshot_name,
                         list_snapshots, load_state, load_weights, remove_snapshots_after, remove_stale_temporaries,
                         save_state, save_weights, snapshot_name, sync_weights_with_state, weights_step)
from .config import (DATA_SOURCES, Config, ConfigError, check_resume_config, config_faces, flat_config, load_config,
                     resume_changes, resume_differences, resume_error_message)
from .evaluation import (FisheyeScorer, evaluate, evaluate_run, evaluate_with_config, headline, load_model, load_run_config,
                         markdown_table, predict)
from .memory import retain_freed_memory
from .runtime import Distributed, EpochSampler, autocast, seed_everything
from .trainer import TrainState, main, train_one_epoch

__all__ = ["CheckpointError", "Config", "ConfigError", "DATA_SOURCES", "FisheyeScorer",
           "DATA_SOURCE_BUILDERS", "Distributed", "EpochSampler", "TrainState", "atomic_write_bytes",
           "atomic_write_text", "autocast", "build_datasets", "build_loss", "build_model", "build_optimizer",
           "check_pair", "check_resume_config", "config_faces", "evaluate", "evaluate_run",
           "evaluate_with_config", "flat_config", "headline", "is_snapshot_name", "list_snapshots", "load_config",
           "load_model", "load_run_config", "load_state", "load_weights", "main", "markdown_table",
           "model_domain", "num_outputs", "predict", "remove_snapshots_after", "remove_stale_temporaries",
           "resume_changes", "resume_differences", "resume_error_message", "retain_freed_memory",
           "save_state", "save_weights", "seed_everything", "snapshot_name", "sync_weights_with_state",
           "train_one_epoch", "weights_step"]
