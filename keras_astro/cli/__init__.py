"""The `keras-astro` command line (`main`); each subcommand is a module here."""

from keras_astro.cli.command import main

__all__ = ["main"]
