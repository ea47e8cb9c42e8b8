"""Bad files and names get a message that says what was expected, not a library's internals."""

import zipfile

import keras
import pytest

from keras_astro import data
from keras_astro.models.saving import load_model
from keras_astro.training.experiment import ExperimentConfig, run_experiment
from tests.test_case import run_cli_error, tiny_model


def test_a_truncated_keras_file_is_not_called_missing(tmp_path):
    path = tmp_path / "model.keras"
    tiny_model().save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="is not a valid .keras file"):
        load_model(path)


def _invalid_json(path):
    """A .keras archive whose config.json is cut short."""
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data[:20] if name == "config.json" else data)


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path),
         "holds a Sequential; expected an AstroTransformer"),
        (lambda path: keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)]).save(path),
         "expected a .keras file saved by keras-astro \\(it holds a Python lambda"),
        (_invalid_json, "expected a .keras file saved by keras-astro \\(its configuration is not valid JSON"),
    ],
    ids=["another model", "unsafe lambda", "invalid JSON"],
)
def test_a_keras_file_of_no_astro_transformer_names_the_file(write, message, tmp_path):
    path = tmp_path / "model.keras"
    write(str(path))
    with pytest.raises(ValueError, match=f"^(Cannot load )?'{path}'.*{message}"):
        load_model(path)


def test_a_corrupt_run_config_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text('{"source": "digits\n')
    with pytest.raises(ValueError, match="config.json is unreadable .*delete that folder"):
        run_experiment(ExperimentConfig(source="digits"), str(tmp_path))


@pytest.mark.parametrize("name", ["cifar-10", "/typo/folder"])
def test_misspelled_sources_get_the_package_message(name):
    with pytest.raises(ValueError, match=r"^(Unknown dataset 'cifar-10'|'/typo/folder' does not exist)"):
        data.load_datasets(name)


def test_cli_misspelled_dataset_is_one_line(capsys, tmp_path):
    message = run_cli_error(capsys, "train", "--dataset", "cifar-10", "--output", tmp_path / "run")
    assert message.count("\n") == 1 and "Unknown dataset 'cifar-10'" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("scale", ["abc", True, float("inf"), -1.0])
def test_attention_scale_must_be_a_finite_positive_number(scale):
    with pytest.raises(ValueError, match="`attention_scale` must be a finite positive number"):
        tiny_model(attention_scale=scale)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04truncated", b"hello world\n", b"epoch,loss\n1,2\n"])
def test_an_empty_or_truncated_torch_checkpoint_says_what_was_expected(tmp_path, content):
    pytest.importorskip("torch")
    from keras_astro import AstroTransformer

    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint: expected a file written by torch.save"):
        AstroTransformer.from_torch_checkpoint(str(path), input_shape=(8, 8, 3))
