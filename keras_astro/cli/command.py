"""The `keras-astro` command: one module per subcommand, each with `add_arguments` and `run`.

Parsing imports neither Keras nor TensorFlow, so `--help` answers at once and
`--backend` sets KERAS_BACKEND before Keras is imported by the subcommand.
"""

import argparse
import importlib
import sys

SUBCOMMANDS = ("train", "evaluate", "predict", "demo", "export", "benchmark")


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-astro")
    except PackageNotFoundError:
        return "unknown"


def _subcommand(name):
    return importlib.import_module(f"keras_astro.cli.{name}")


def build_parser():
    """The `keras-astro` argument parser, every subcommand included."""
    parser = argparse.ArgumentParser(
        prog="keras-astro",
        description="Train, evaluate, run and serve AstroTransformer image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _subcommand(name)
        module.add_arguments(
            commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        )
    return parser


def main(argv=None):
    """Entry point of the `keras-astro` console script; `argv=None` reads `sys.argv`."""
    from keras_astro.cli.arguments import select_backend

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        select_backend(getattr(args, "backend", None))
        _subcommand(args.command).run(args)
    except ValueError as error:
        parser.exit(2, f"keras-astro {args.command}: error: {error}\n")
