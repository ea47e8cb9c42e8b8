"""Training: the recipe (`recipe`), the resumable fit (`resumable`), data-parallel
training (`distribute`), evaluation (`evaluation`), the learning-rate range test
(`lr_finder`), the run's pictures (`plots`), the run folder's files and states
(`run_folder`), and the whole experiment that the CLI and the examples run
(`experiment`). Names load on first use.
"""

from keras_astro.training.run_folder import (
    BACKUP_DIR,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LOGS_DIR,
    METRICS_FILE,
    training_finished,
)
from keras_astro.utils import lazy_exports

_EXPORTS = {
    "ExperimentConfig": "keras_astro.training.experiment",
    "run_experiment": "keras_astro.training.experiment",
    "compile_for_training": "keras_astro.training.recipe",
    "find_learning_rate": "keras_astro.training.lr_finder",
    "evaluate": "keras_astro.training.evaluation",
    "fit": "keras_astro.training.resumable",
    "load_history": "keras_astro.training.resumable",
    "best_epoch": "keras_astro.training.resumable",
}
__all__ = [
    "BACKUP_DIR", "CHECKPOINT_FILE", "CONFIG_FILE", "HISTORY_FILE", "LOGS_DIR", "METRICS_FILE",
    "training_finished", *_EXPORTS,
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
