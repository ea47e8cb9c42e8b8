"""`SourceOptions`: the data-source options, one value that `load_datasets` reads."""

import dataclasses
import inspect

from keras_astro.data.loading import load_datasets
from keras_astro.data.options import SourceOptions


def test_load_datasets_defaults_are_the_source_options():
    parameters = inspect.signature(load_datasets).parameters
    for name, default in SourceOptions().load_keywords().items():
        assert parameters[name].default == default, name


def test_every_source_option_is_a_load_datasets_keyword():
    keywords = SourceOptions(tfds_data_dir="/data", class_names=("a", "b")).load_keywords()
    assert keywords["data_dir"] == "/data" and keywords["class_names"] == ("a", "b")
    assert len(keywords) == len(dataclasses.fields(SourceOptions))
    assert set(keywords) <= set(inspect.signature(load_datasets).parameters)
