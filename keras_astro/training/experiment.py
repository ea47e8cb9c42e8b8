"""One whole experiment from a configuration: what `keras-astro train` and the examples run.

data -> model -> compile -> resumable fit -> reload the best epoch -> evaluate ->
pictures -> `metrics.json`, in a run folder that the same configuration resumes and
another configuration is refused.
"""

import contextlib
import dataclasses
import math
import os
import time

from keras_astro.data.options import (
    AUGMENT_POLICIES,
    COUNT,
    FRACTION,
    IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    POSITIVE,
    POSITIVE_COUNT,
    RATE,
    SourceOptions,
    option,
    options_from,
)
from keras_astro.models.presets import CONFIGS, NORMALIZATIONS
from keras_astro.training import run_folder
from keras_astro.training.recipe import Recipe, check_fraction_below_one, peak_learning_rate
from keras_astro.utils import PREPROCESSING, is_int_at_least

ATTENTION_IMAGES = 8
INPUT_OPTIONS = "input: what the images are and how the model scales them (the model keeps these)"
FINE_TUNING_OPTIONS = "fine-tuning"
# The calibration scores of `evaluation.score` that metrics.json holds.
CALIBRATION_KEYS = ("ece", "ece_chance", "ece_p_value", "nll", "brier")
# Augmentations that turn images freely: a model trained with them averages the 8 views
# of the square in inference (`test_time_augmentation="auto"`).
ORIENTATION_FREE = ("dihedral", "rotate")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Recipe, SourceOptions):
    """Everything that defines a run; two runs with equal configs are the same run.

    `source` is a dataset name (`"digits"`, `"galaxy10_decals"`, a tensorflow-datasets
    name) or the path of an image or FITS folder, an HDF5 file or a catalogue (.csv);
    the other fields are `keras-astro train`'s options. The recipe's (`Recipe`,
    documented by `compile_for_training`) and the data source's (`SourceOptions`,
    documented by `keras_astro.data.load_datasets`) are inherited, so that the config,
    its `config.json` and its options stay flat; `recipe` and `source_options` give
    those groups whole.
    """

    source: str
    model: str = option("small", "configuration (default: %(default)s)", choices=tuple(CONFIGS))
    epochs: int = option(30, "default: %(default)s", bounds=POSITIVE_COUNT)
    batch_size: int | None = option(
        None,
        "global batch size: with --distribute, split across all devices of all processes, "
        "so N devices take batch-size/N images each per step (default: the largest of 64, "
        "32, 16 and 8 that gives an epoch at least 16 steps: 64 from 1024 training images "
        "up, 16 for a few hundred)",
        bounds=POSITIVE_COUNT,
    )
    image_size: int = option(
        32,
        f"side of the square images the model takes, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
        "(the attention's memory grows with (H*W)^2); images are resized to it "
        "(default: %(default)s)",
        bounds=IMAGE_SIZE,
    )
    dropout: float = option(
        0.0, "dropout rate before the classifier, 0 to <1 (default: %(default)s)", bounds=RATE
    )
    augment: str = option(
        "basic",
        "training augmentation: basic = random 1/8 shift + horizontal flip; dihedral = the "
        "shift + the 8 symmetries of the square (galaxies); rotate = the shift + any angle + "
        "flip; randaugment (photos only), mixup, cutmix add to basic (default: %(default)s)",
        choices=AUGMENT_POLICIES,
    )
    mixed_precision: str | None = option(
        None,
        "train with the mixed_bfloat16 (default when given) or mixed_float16 policy",
        nargs="?", const="bfloat16", choices=("bfloat16", "float16"),
    )
    remat: bool = option(
        False, "rematerialize activations in the backward pass (less memory, more compute)"
    )
    distribute: bool = option(
        False,
        "data-parallel training on all local devices (JAX, TensorFlow), and across processes "
        "when launched by torchrun (torch), with KERAS_DISTRIBUTION_* variables (JAX) or with "
        "TF_CONFIG (TensorFlow); process 0 writes the run folder",
    )
    seed: int = option(
        0,
        "seeds weights, shuffling, augmentation (default: %(default)s)",
        bounds=dict(kind=int, minimum=0, maximum=2**32 - 1, why="NumPy's seed range"),
    )
    # === What the inputs are and how the model scales them: the model keeps these ===
    center_crop: float | None = option(
        None,
        "keep the central FRACTION of each side before resizing to --image-size (the galaxy "
        "sits small in a survey cutout); predict, evaluate and export apply it too",
        bounds=FRACTION, metavar="FRACTION", group=INPUT_OPTIONS,
    )
    preprocessing: str | None = option(
        None,
        "what the inputs are: pixels (0..255) or flux (physical units, NaN allowed; see "
        "--normalization). Default: flux for FITS and float HDF5 data, pixels otherwise",
        choices=PREPROCESSING, group=INPUT_OPTIONS,
    )
    normalization: str | None = option(
        None,
        "how the model scales raw inputs: image = each cutout and band by its own background "
        "and noise (median, MAD), arcsinh, standardized, as radio and morphology work does; "
        "dataset = one scale for all images, which keeps colours (pixels to [-1, 1]; flux: "
        "arcsinh and per-band statistics of the training data). Default: image for flux, "
        "dataset for pixels",
        choices=NORMALIZATIONS, group=INPUT_OPTIONS,
    )
    clip_sigma: float | None = option(
        None,
        "with --normalization image: set pixels below K noise levels above each image's "
        "background to the background (the radio convention, e.g. 3; default: off)",
        bounds=POSITIVE, metavar="K", group=INPUT_OPTIONS,
    )
    class_weight: str | None = option(
        None, "weigh each class by the inverse of its share of the training data",
        choices=("balanced",),
    )
    # === Fine-tuning (with `backbone_lr_factor` of the recipe) ===
    init_from: str | None = option(
        None,
        "start from a trained model's weights: a .keras file, a preset folder, a shipped "
        "preset (frdeep_first_small) or an hf:// or kaggle:// handle. Every layer but the "
        "classifier is kept; the classifier too when the classes are the same. Same --model, "
        "bands and kind of input (flux or pixels); crop and normalization come from this "
        "run's data and options",
        metavar="MODEL_OR_PRESET", group=FINE_TUNING_OPTIONS,
    )
    freeze_epochs: int = option(
        0,
        "with --init-from: train only the classifier for the first N epochs, the rest of the "
        "model frozen (default: %(default)s)",
        bounds=COUNT, metavar="N", group=FINE_TUNING_OPTIONS,
    )

    def check(self):
        """Raises a `ValueError` for a setting that would fail or train a NaN model."""
        from keras_astro.models.preset_files import check_handle

        self.recipe.check()
        check_fraction_below_one("dropout", self.dropout)
        if self.init_from is not None:
            check_handle(self.init_from)
        elif self.freeze_epochs or self.backbone_lr_factor != 1:
            raise ValueError(
                "`freeze_epochs` and `backbone_lr_factor` fine-tune a trained model, which "
                "`init_from` (--init-from) names; it is not set. Received: "
                f"freeze_epochs={self.freeze_epochs!r}, backbone_lr_factor={self.backbone_lr_factor!r}"
            )
        if not is_int_at_least(self.freeze_epochs, 0) or self.freeze_epochs > self.epochs:
            raise ValueError(
                f"`freeze_epochs` must be an int from 0 to epochs={self.epochs}. "
                f"Received: freeze_epochs={self.freeze_epochs!r}"
            )
        if self.class_weight not in (None, "balanced"):
            raise ValueError(
                f"`class_weight` must be None or 'balanced'. Received: {self.class_weight!r}"
            )

    @property
    def recipe(self):
        """The `Recipe` of this config (`compile_for_training`'s settings)."""
        return options_from(Recipe, self)

    @property
    def source_options(self):
        """The `SourceOptions` of this config (how `load_datasets` reads the source)."""
        return options_from(SourceOptions, self)

    @property
    def source_name(self):
        """A short name for the source: a folder's base name, else the dataset name."""
        if not os.path.exists(self.source):
            return self.source
        name = os.path.basename(self.source.rstrip(os.sep))
        return name if os.path.isdir(self.source) else os.path.splitext(name)[0]

    def default_output_dir(self):
        return os.path.join("runs", f"{self.model}-{self.source_name}")

    def to_json(self, backend):
        """The run's `config.json`: the fields, a folder source as an absolute path, the backend."""
        config = dataclasses.asdict(self)
        for key in ("source", "init_from"):
            if config[key] is not None and os.path.exists(config[key]):
                config[key] = os.path.abspath(config[key])
        if self.class_names is not None:
            config["class_names"] = list(self.class_names)
        return {**config, "backend": backend}


def summary(metrics, output_dir):
    """The one line that ends a run."""
    tta = metrics.get("test_accuracy_tta")
    one_view = metrics.get("test_accuracy_one_view")
    return (
        f"{metrics['model']} on {metrics['dataset']}: test accuracy "
        f"{metrics['test_accuracy']:.2%}"
        + (
            f" (the average of 8 views; one view {one_view:.2%})" if one_view is not None
            else "" if tta is None else f" (with 8-view TTA {tta:.2%})"
        )
        + f", balanced accuracy {metrics['test_balanced_accuracy']:.2%}, cross-entropy "
        f"{metrics['test_loss']:.4f} (without label smoothing)"
        + _calibration_summary(metrics)
        + f" ({metrics['num_test']} {metrics['test_split']} images) after "
        f"{_count(metrics['epochs'], 'epoch')}; {metrics['backend']} on {metrics['devices']} device(s), "
        + (f"{metrics['images_per_second']:.0f} images/s, " if metrics.get("epochs_this_run") else "")
        + f"{metrics['wall_time_s']:.0f} s. "
        f"Files in {output_dir}"
    )


def _calibration_summary(metrics):
    """The summary's calibration part: ", ECE 0.031 (0.120 before temperature 1.8; noise
    alone gives 0.025)"; without calibration the ECE and its noise level, nothing for a
    run finished before ECE was scored."""
    ece = metrics.get("test_ece")
    if ece is None:
        return ""
    notes = []
    if metrics.get("calibration"):
        notes.append(f"calibration {metrics['calibration']}")
    elif metrics.get("test_ece_uncalibrated") is not None:
        notes.append(
            f"{metrics['test_ece_uncalibrated']:.3f} before temperature {metrics['temperature']:.3g}"
        )
    if metrics.get("test_ece_chance") is not None:
        notes.append(f"noise alone gives {metrics['test_ece_chance']:.3f}")
    return f", ECE {ece:.3f}" + (f" ({'; '.join(notes)})" if notes else "")


# Classes the header lists by name (CIFAR-100 would fill the screen).
HEADER_CLASSES = 12


def data_header(config, datasets, model, steps_per_epoch):
    """What a run trains on and how, printed before its first epoch; `datasets` from
    `load_datasets`, which always holds a validation split."""
    splits = {"train": datasets.num_train, "validation": datasets.num_validation, "test": datasets.num_test}
    counts = datasets.class_counts
    shown = datasets.class_names[:HEADER_CLASSES]
    if counts is None:
        classes = ", ".join(shown)
    else:
        classes = ", ".join(
            f"{name} {'/'.join(str(counts[split][i]) for split in splits)}"
            for i, name in enumerate(shown)
        )
    if datasets.num_classes > len(shown):
        classes += f", ... ({datasets.num_classes - len(shown)} more)"
    crop = "" if datasets.center_crop is None else f"the central {datasets.center_crop:g} of each side, "
    clip = "" if model.clip_sigma is None else f", clipped below {model.clip_sigma:g} sigma"
    height, width = (model.image_shape[:2] if model.data_format == "channels_last" else model.image_shape[1:])
    return (
        f"Data: {config.source_name}, {datasets.num_classes} classes, images per class "
        f"({' / '.join(splits)}): {classes}; {' / '.join(map(str, splits.values()))} in all.\n"
        f"Splits: the epoch is chosen on {datasets.validation_split}, scored on "
        f"{datasets.test_split}.\n"
        f"Input: {datasets.preprocessing} with {datasets.image_shape[-1]} band(s), "
        f"{crop}resized to {height}x{width}, normalized per {'image' if model.normalization == 'image' else 'data set'}"
        f"{clip}; augmentation {config.augment}; {_count(config.epochs, 'epoch')} of "
        f"{_count(steps_per_epoch, 'step')} of {datasets.batch_size} images, peak learning rate "
        f"{peak_learning_rate(config.learning_rate, datasets.batch_size):.2g}."
    )


def _count(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


# What a config.json written before a field existed trained with: the field's value then,
# which is not always today's default (keras-astro 0.x had no EMA, and its warmup was
# set in epochs, so such files always hold `warmup_epochs`).
LEGACY_VALUES = {
    "use_ema": False, "ema_momentum": None, "normalization": "dataset", "clip_sigma": None,
    "test_time_augmentation": "none",
}


def experiment_state(config, output_dir=None):
    """`run_folder.NEW`, `RESUME` or `FINISHED`: what `run_experiment` will do in `output_dir`.

    Refuses a folder of another configuration, as `run_experiment` does. A config.json
    written by an older version is completed with the values that version trained with.
    """
    import keras

    backend = keras.backend.backend()
    return run_folder.experiment_state(
        output_dir or config.default_output_dir(),
        config.to_json(backend),
        defaults={**ExperimentConfig(source=config.source).to_json(backend), **LEGACY_VALUES},
    )


def run_experiment(config, output_dir=None, *, verbose="auto"):
    """Trains, evaluates and draws one experiment; run it again to resume or to read it.

    Args:
        config: an `ExperimentConfig`.
        output_dir: the run folder (default `runs/<model>-<source>`). The same config
            resumes an interrupted run there and returns a finished run's metrics
            without training; another config is refused with the differences listed.
        verbose: passed to `model.fit`.

    Returns:
        The run's metrics, as written to `metrics.json` in the run folder; `None` on
        the processes of a multi-process run other than the chief, which writes them.

    Raises:
        ValueError: another process writes the run folder (`run_folder.lock`).
    """
    from keras_astro.training import distribute

    # Before the run folder is touched, so a rejected setting leaves it reusable.
    config.check()
    output_dir = output_dir or config.default_output_dir()
    experiment_state(config, output_dir)  # refuses another run's folder before the lock file
    if config.distribute:
        distribute.initialize()  # before JAX computes anything
    # The chief alone writes the run folder, so it alone holds it.
    with run_folder.lock(output_dir) if distribute.is_chief() else contextlib.nullcontext():
        return _run_experiment(config, output_dir, verbose)


def _run_experiment(config, output_dir, verbose):
    """`run_experiment` in the run folder that this process holds."""
    from keras_astro.training import distribute
    from keras_astro.utils import write_json

    started = time.perf_counter()
    state = experiment_state(config, output_dir)
    if state == run_folder.FINISHED:
        metrics = run_folder.read_metrics(output_dir)
        print(f"Already finished (same configuration): {summary(metrics, output_dir)}")
        return metrics

    datasets = _seeded_datasets(config)
    # This process' part of each training batch; refuses batches it cannot split.
    process_datasets = distribute.shard_training_data(datasets, datasets.batch_size)
    if config.init_from is not None:  # before config.json: a refused source leaves no run
        _check_init_from(config, datasets)
    if distribute.is_chief():  # the chief alone writes the run folder
        _open_run_folder(config, output_dir, state, datasets)
    training = _train(config, datasets, process_datasets, output_dir, verbose)
    if not distribute.is_chief():
        return None

    evaluation = _evaluate_best_epoch(config, datasets, output_dir)
    metrics = _metrics(config, datasets, evaluation, training, started)
    # Last: marks the run finished.
    write_json(os.path.join(output_dir, run_folder.METRICS_FILE), metrics)
    print(summary(metrics, output_dir))
    return metrics


def _open_run_folder(config, output_dir, state, datasets):
    """Writes a new run's config.json; checks that a resumed run goes on with its data."""
    import keras

    from keras_astro.utils import write_json

    if state == run_folder.NEW:
        os.makedirs(output_dir, exist_ok=True)
        write_json(
            os.path.join(output_dir, run_folder.CONFIG_FILE),
            {
                **config.to_json(keras.backend.backend()),
                run_folder.DATA_KEY: run_folder.data_record(datasets),
            },
        )
    else:
        run_folder.resume(output_dir, datasets)


def _train(config, datasets, process_datasets, output_dir, verbose):
    """Builds, compiles and fits the model on this process' data, into the run folder.

    Returns the model, the number of devices, the epochs this call ran and its seconds.
    """
    from keras_astro.training import distribute
    from keras_astro.training.recipe import balanced_class_weights, compile_for_training
    from keras_astro.training.resumable import fit

    with (
        distribute.data_parallel(config.distribute) as devices,
        distribute.process_folder(output_dir) as fit_dir,  # the chief's is output_dir
    ):
        model = _build_model(config, datasets)
        steps_per_epoch = math.ceil(datasets.num_train / datasets.batch_size)
        compile_for_training(
            model,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=datasets.batch_size,
            **config.recipe.compile_keywords(),
        )
        if distribute.is_chief():
            print(data_header(config, datasets, model, steps_per_epoch))
        fit_started = time.perf_counter()
        if run_folder.training_finished(output_dir):  # killed after training, while evaluating
            epochs_run = 0
        else:
            class_weight = None
            if config.class_weight == "balanced":
                class_weight = balanced_class_weights(datasets.train, datasets.num_classes)
            history = fit(
                model, process_datasets, epochs=config.epochs, output_dir=fit_dir,
                class_weight=class_weight, callbacks=distribute.callbacks(),
                verbose=verbose if distribute.is_chief() else 0, freeze_epochs=config.freeze_epochs,
            )
            epochs_run = len(history.epoch)
        fit_seconds = time.perf_counter() - fit_started
    return model, devices, epochs_run, fit_seconds


def _test_time_augmentation(config):
    """The saved model's `test_time_augmentation` that `config` asks for."""
    if config.test_time_augmentation == "auto":
        return "dihedral" if config.augment in ORIENTATION_FREE else None
    return None if config.test_time_augmentation == "none" else config.test_time_augmentation


def _finished_model(config, datasets, output_dir):
    """The best epoch's model as `model.keras` keeps it: averaging the 8 views when
    `config.test_time_augmentation` asks, with the temperature fitted on the validation
    split (`config.calibrate`, fitted to the views' average; none where the split leaves
    it unconstrained, `training.calibration.constrained`). A run resumed after that save
    keeps the saved model."""
    from keras_astro.models.calibration import rebuild
    from keras_astro.models.saving import load_model
    from keras_astro.training.calibration import calibrate_model

    path = os.path.join(output_dir, run_folder.CHECKPOINT_FILE)
    best = load_model(path)
    views = _test_time_augmentation(config)
    if best.test_time_augmentation != views or (config.calibrate and best.temperature is None):
        best = rebuild(best, test_time_augmentation=views)
        if config.calibrate:
            best = calibrate_model(best, datasets.validation)
        partial = path.removesuffix(".keras") + ".partial.keras"  # Keras saves .keras names only
        best.save(partial)
        os.replace(partial, path)
    return best


def _evaluate_best_epoch(config, datasets, output_dir):
    """The saved model (`_finished_model`), its test results, those with the 8 views
    averaged (where training taught them, or the model averages them) and with one view
    (when the model averages 8; else `None`), the calibration scores without the
    temperature (`None` without one) and the best history row; draws the run's pictures.

    The test split goes through the network once per view: every score comes from those
    uncalibrated logits, as the model combines them (softmax(logits / T), averaged over
    its views)."""
    from keras_astro.training import plots
    from keras_astro.training.calibration import calibration_scores, softmax, view_logits
    from keras_astro.training.evaluation import dataset_labels, score
    from keras_astro.training.resumable import best_epoch, load_history

    best = _finished_model(config, datasets, output_dir)
    labels = dataset_labels(datasets.test)
    averages_views = bool(best.test_time_augmentation)
    logits = view_logits(best, datasets.test, tta=config.augment in ORIENTATION_FREE)
    views = softmax(logits, best.temperature or 1.0)  # [views, n, classes]; view 0 as given

    def as_the_model(views):
        return views.mean(axis=0) if averages_views else views[0]

    probabilities = as_the_model(views)
    results = score(probabilities, labels, tta=averages_views)
    reliability = {"model" if best.temperature is None else f"T = {best.temperature:.3g}": probabilities}
    scores_uncalibrated = None
    if best.temperature is not None:
        before = as_the_model(softmax(logits))
        scores_uncalibrated = calibration_scores(before, labels.argmax(-1))
        reliability = {"uncalibrated": before, **reliability}
    results_tta = results_one_view = None
    if averages_views:
        results_tta, results_one_view = results, score(views[0], labels)
    elif len(views) > 1:
        results_tta = score(views.mean(axis=0), labels, tta=True)
    full_history = load_history(os.path.join(output_dir, run_folder.HISTORY_FILE))
    plots.plot_training_curves(full_history, os.path.join(output_dir, "training_curves.png"))
    title = f"{config.source_name} {datasets.test_split}"
    plots.plot_confusion_matrices(results, datasets.class_names, output_dir, title)
    plots.plot_reliability(reliability, labels, os.path.join(output_dir, "reliability.png"), title)
    images, labels = next(datasets.test.unbatch().batch(ATTENTION_IMAGES).as_numpy_iterator())
    plots.plot_attention_maps(
        best, images, os.path.join(output_dir, "attention_maps.png"), labels=labels.argmax(-1)
    )
    views = {"_tta": results_tta, "_one_view": results_one_view}
    return best, results, views, scores_uncalibrated, best_epoch(full_history)


def _metrics(config, datasets, evaluation, training, started):
    """The run's `metrics.json`: its scores, its data and model, and what it ran on."""
    import keras

    from keras_astro.training.calibration import CALIBRATION_BINS
    from keras_astro.training.evaluation import per_class_report

    best, results, views, scores_uncalibrated, best_row = evaluation
    model, devices, epochs_run, fit_seconds = training
    backend = keras.backend.backend()
    return {
        "model": config.model,
        "dataset": config.source_name,
        "test_split": datasets.test_split,
        "validation_split": datasets.validation_split,
        "num_train": datasets.num_train,
        "num_validation": datasets.num_validation,
        "num_test": results["num_images"],
        "test_accuracy": results["accuracy"],
        "test_balanced_accuracy": results["balanced_accuracy"],
        "test_loss": results["loss"],
        **({"test_top5_accuracy": results["top5_accuracy"]} if "top5_accuracy" in results else {}),
        "temperature": best.temperature,
        **(
            {"calibration": "skipped: the validation split leaves the temperature unconstrained"}
            if config.calibrate and best.temperature is None else {}
        ),
        "calibration_bins": CALIBRATION_BINS,
        **{f"test_{key}": results[key] for key in CALIBRATION_KEYS},
        **(
            {}
            if scores_uncalibrated is None
            else {f"test_{key}_uncalibrated": scores_uncalibrated[key] for key in CALIBRATION_KEYS}
        ),
        "test_time_augmentation": best.test_time_augmentation,
        **{
            key: value
            for suffix, scores in views.items() if scores is not None
            for key, value in {
                f"test_accuracy{suffix}": scores["accuracy"],
                f"test_balanced_accuracy{suffix}": scores["balanced_accuracy"],
                **{f"test_{key}{suffix}": scores[key] for key in CALIBRATION_KEYS},
            }.items()
        },
        **per_class_report(results, datasets.class_names),
        "preprocessing": datasets.preprocessing,
        "normalization": best.normalization,
        "clip_sigma": best.clip_sigma,
        "center_crop": datasets.center_crop,
        "bands": datasets.image_shape[-1],
        "best_epoch": best_row["epoch"] + 1,
        "epochs": config.epochs,
        "epochs_this_run": epochs_run,
        "image_size": config.image_size,
        "batch_size": datasets.batch_size,
        "learning_rate": peak_learning_rate(config.learning_rate, datasets.batch_size),
        "num_parameters": best.count_params(),
        "backend": backend,
        "devices": devices,
        "dtype_policy": keras.config.dtype_policy().name,
        "jit_compile": bool(model.jit_compile),
        "keras_version": keras.__version__,
        "fit_seconds": fit_seconds,
        "images_per_second": datasets.num_train * epochs_run / fit_seconds,
        "wall_time_s": time.perf_counter() - started,
    }


def _seeded_datasets(config):
    """The config's dtype policy and seed set, then its data: what the model and the
    data order of `run_experiment` and the range test start from."""
    import keras

    if config.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{config.mixed_precision}")
    keras.utils.set_random_seed(config.seed)
    return _load_datasets(config)


def _load_datasets(config):
    from keras_astro.data import load_datasets

    return load_datasets(
        config.source,
        image_size=config.image_size,
        batch_size=config.batch_size,
        augment=config.augment,
        seed=config.seed,
        center_crop=config.center_crop,
        preprocessing=config.preprocessing,
        **config.source_options.load_keywords(),
    )


def _build_model(config, datasets):
    """The config's model for the data: new, or started from `init_from`'s weights with
    the input settings of this data and config (`models.fine_tune.initialize_from`)."""
    from keras_astro.models import AstroTransformer
    from keras_astro.models.fine_tune import initialize_from

    settings = dict(
        input_shape=datasets.image_shape,
        class_names=datasets.class_names,
        preprocessing=datasets.preprocessing,
        center_crop=datasets.center_crop,
        normalization=config.normalization,
        clip_sigma=config.clip_sigma,
        dropout=config.dropout,
        remat=config.remat,
    )
    if config.init_from is None:
        model = AstroTransformer.from_name(config.model, num_classes=datasets.num_classes, **settings)
    else:
        model = initialize_from(config.init_from, **settings)
    # Flux statistics from the training data (a resumed run restores them with the weights).
    model.adapt_preprocessing(datasets.train)
    return model


def _check_init_from(config, datasets):
    """Refuses an `init_from` model of another configuration than `model`, or one that
    learned other inputs than the data's."""
    from keras_astro.models.fine_tune import check_compatible
    from keras_astro.models.preset_files import load_source
    from keras_astro.models.presets import CONFIGS

    source = load_source(config.init_from)
    architecture = (source.expansion, tuple(source.stage_depths))
    if architecture != CONFIGS[config.model]:
        names = [name for name, value in CONFIGS.items() if value == architecture]
        raise ValueError(
            f"--init-from {config.init_from} is an AstroTransformer "
            f"{names[0] if names else 'of its own configuration'} (expansion "
            f"{architecture[0]}, stage depths {architecture[1]}), --model is {config.model}: "
            + (f"pass --model {names[0]}." if names else "expected a small, base or large model.")
        )
    check_compatible(
        source,
        config.init_from,
        dict(input_shape=datasets.image_shape, preprocessing=datasets.preprocessing),
    )


def find_experiment_learning_rate(config, plot_path=None, output_dir=None, **kwargs):
    """The learning-rate range test on `config`'s model and training data (`--find-lr`).

    Builds the data and the model as `run_experiment` would, runs
    `lr_finder.find_learning_rate` with the config's weight decay and label smoothing,
    saves the plot to `plot_path` (default: `lr_finder.png` in the run folder, which a
    later `run_experiment` into that folder accepts) and prints the suggestion. Trains
    nothing that is kept. Returns `find_learning_rate`'s dict.
    """
    from keras_astro.training.lr_finder import find_learning_rate

    config.check()
    folder = contextlib.nullcontext()
    if plot_path is None:
        output_dir = output_dir or config.default_output_dir()
        plot_path = os.path.join(output_dir, run_folder.LR_FINDER_FILE)
        folder = run_folder.lock(output_dir)  # not while a run writes there
    # Before the test runs: a folder that cannot be made fails now, not after it.
    os.makedirs(os.path.dirname(os.path.abspath(plot_path)), exist_ok=True)
    with folder:
        datasets = _seeded_datasets(config)
        model = _build_model(config, datasets)
        result = find_learning_rate(
            model,
            datasets.train,
            weight_decay=config.weight_decay,
            label_smoothing=config.label_smoothing,
            plot_path=plot_path,
            **kwargs,
        )
    print(
        f"Learning-rate range test ({len(result['losses'])} batches of {datasets.batch_size}): "
        f"suggested --learning-rate {result['suggestion']:.2g} (steepest descent "
        f"{result['steepest']:.2g}, lowest loss at {result['min_loss_lr']:.2g}). Plot: {plot_path}"
    )
    return result
