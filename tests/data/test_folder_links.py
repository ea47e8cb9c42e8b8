"""The folder walk follows links to folders, and refuses a link cycle instead of looping."""

import os

import pytest

from keras_astro import data
from tests.test_case import write_class_folders


def test_a_linked_folder_is_read(tmp_path):
    write_class_folders(tmp_path / "train", per_class=2)
    write_class_folders(tmp_path / "test", per_class=1)
    write_class_folders(tmp_path / "more", per_class=1)
    os.symlink(tmp_path / "more" / "cat", tmp_path / "train" / "cat" / "more")
    datasets = data.load_datasets(tmp_path, image_size=8)
    assert datasets.num_train + datasets.num_validation == 7


@pytest.mark.parametrize("links", [("self",), ("a", "b")])
def test_a_link_cycle_is_refused_naming_the_link(tmp_path, links):
    write_class_folders(tmp_path / "train", per_class=2)
    write_class_folders(tmp_path / "test", per_class=1)
    cat = tmp_path / "train" / "cat"
    for name in links:  # each links back to the class folder itself
        os.symlink(cat, cat / name)
    with pytest.raises(ValueError, match=f"cat/{links[0]}' links to .*no link cycles"):
        data.load_datasets(tmp_path, image_size=8)
