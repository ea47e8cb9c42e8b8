"""tensorflow-datasets image classification datasets as a source."""

import tensorflow as tf

from keras_astro.data.pipeline import AUTOTUNE, content_fingerprint, make_datasets

TFDS_EXAMPLES = ("cifar10", "cifar100", "eurosat", "mnist", "fashion_mnist", "svhn_cropped")


class UnknownDatasetError(ValueError):
    """tensorflow-datasets has no dataset of that name."""


def load_tfds(name, data_dir, validation_fraction, options):
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
    train_split = "train"
    test_split = next((split for split in ("test", "validation") if split in splits), None)
    # What the run summary's "(N <description> images)" says of the evaluation split.
    description = test_split
    if test_split is None:
        cut = round(splits["train"].num_examples * (1 - validation_fraction))
        train_split, test_split = f"train[:{cut}]", f"train[{cut}:]"
        description = f"held-out (the last {validation_fraction:.0%} of train, {test_split})"

    def examples(split):
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return dataset.map(
            lambda image, label: (image, tf.cast(label, tf.int32)),
            num_parallel_calls=AUTOTUNE,
        )

    return make_datasets(
        examples(train_split),
        examples(test_split),
        class_names=list(label_feature.names),
        test_split=description,
        num_train=splits[train_split].num_examples,
        num_test=splits[test_split].num_examples,
        options=options,
        kind=options.kind("pixels"),
        fingerprint=content_fingerprint(
            name, str(info.version), train_split, test_split,
            splits[train_split].num_examples, splits[test_split].num_examples,
        ),  # fmt: skip
    )
