"""tensorflow-datasets image classification datasets as a source."""

import tensorflow as tf

from keras_astro.data.pipeline import AUTOTUNE, content_fingerprint, make_datasets

TFDS_EXAMPLES = ("cifar10", "cifar100", "eurosat", "mnist", "fashion_mnist", "svhn_cropped")


class UnknownDatasetError(ValueError):
    """tensorflow-datasets has no dataset of that name."""


def load_tfds(name, data_dir, options):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise UnknownDatasetError(name) from error
    except ValueError as error:
        # Not even a well-formed name ("cifar-10"): tensorflow-datasets explains its grammar.
        if "Parsing builder name string" not in str(error):
            raise
        raise UnknownDatasetError(name) from error
    info = builder.info
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise ValueError(f"tensorflow-datasets {name!r} has no (image, label) supervised keys.")
    image_key, label_key = info.supervised_keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    if not (
        isinstance(image_feature, tfds.features.Image)
        and image_feature.shape[-1] in (1, 3)
        and isinstance(label_feature, tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"tensorflow-datasets {name!r} is not an image classification dataset with "
            f"1- or 3-channel images and class labels. Features: {info.features}"
        )
    try:
        builder.download_and_prepare()
    except OSError as error:  # offline, mostly: say where files prepared elsewhere go
        raise ValueError(
            f"tensorflow-datasets could not download or prepare {name!r} ({error}); without "
            f"the network, prepare it where there is one (`tfds build {name} --data_dir DIR`) "
            f"and copy it so that {builder.data_dir} holds it (DIR is --tfds-data-dir)."
        ) from None
    splits = builder.info.splits
    if "train" not in splits:
        raise ValueError(
            f"tensorflow-datasets {name!r} has no 'train' split. Splits: {list(splits)}"
        )
    # The dataset's test (else validation) split scores the run, and its validation split
    # chooses the epoch when it has both; what it lacks is the end of train, in order.
    fraction = options.validation_fraction
    held = [split for split in ("test", "validation") if split in splits]
    end = total = splits["train"].num_examples  # end: where train stops, in its split
    if held:
        test_split = description = held[0]
    else:
        end = round(total * (1 - fraction))
        test_split = f"train[{end}:{total}]"
        description = f"held-out (the last {fraction:.0%} of train, {test_split})"
    if len(held) > 1:
        train_split, validation_split = f"train[:{end}]", held[1]
        validation_description = validation_split
    else:
        cut = round(end * (1 - fraction))
        train_split, validation_split = f"train[:{cut}]", f"train[{cut}:{end}]"
        validation_description = f"held-out ({validation_split})"

    def examples(split):
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return dataset.map(
            lambda image, label: (image, tf.cast(label, tf.int32)),
            num_parallel_calls=AUTOTUNE,
        )

    return make_datasets(
        examples(train_split),
        examples(test_split),
        validation=examples(validation_split),
        class_names=list(label_feature.names),
        test_split=description,
        validation_split=validation_description,
        num_train=splits[train_split].num_examples,
        num_test=splits[test_split].num_examples,
        num_validation=splits[validation_split].num_examples,
        options=options,
        preprocessing=options.preprocessing_or("pixels"),
        fingerprint=content_fingerprint(
            name, str(info.version), train_split, test_split, validation_split,
            splits[train_split].num_examples, splits[test_split].num_examples,
        ),
    )
