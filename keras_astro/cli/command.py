"""The `keras-astro` command: one module per subcommand, each with `add_arguments` and `run`.

Parsing imports neither Keras nor TensorFlow, so `--help` answers at once and
`--backend` sets KERAS_BACKEND before Keras is imported by the subcommand.
"""

import argparse
import importlib
import logging
import os
import re
import sys
import traceback

from keras_astro import __version__
from keras_astro.utils import require

SUBCOMMANDS = (
    "train", "evaluate", "predict", "embed", "similar", "demo", "export", "benchmark",
)
# The `train` extra's packages, which train, evaluate, predict, embed, similar and demo
# import beyond the core install; `export` checks its own (keras_astro.export), `benchmark` runs from a clone.
TRAIN_EXTRA = ("tensorflow", "sklearn", "matplotlib", "tensorboard", "tqdm")


def _subcommand(name):
    return importlib.import_module(f"keras_astro.cli.{name}")


def build_parser():
    """The `keras-astro` argument parser, every subcommand included."""
    parser = argparse.ArgumentParser(
        prog="keras-astro",
        description="Train, evaluate, run and serve AstroTransformer image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the native log lines of TensorFlow, XLA and CUDA (hidden by default)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = _subcommand(name)
        module.add_arguments(
            commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        )
    return parser


def hide_native_logs():
    """Sends what native code writes to file descriptor 2 to /dev/null; Python keeps it.

    TensorFlow, XLA and CUDA log from C++ straight to that descriptor (oneDNN notices,
    "Could not find cuda drivers", cuInit errors on a CPU machine), some of them at
    import time, before any Python setting applies. Python's own stderr (errors,
    warnings, tracebacks) moves to a copy of the descriptor and still reaches the
    terminal. The example scripts call it too, before they import TensorFlow.
    """
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1)


def _interrupted(args):
    """The one line a Ctrl-C prints: what is kept and how to go on."""
    message = f"keras-astro {args.command}: interrupted."
    if args.command in ("train", "demo"):
        output = args.output
        if output is None:
            from keras_astro.cli.train import experiment_config

            output = experiment_config(args).default_output_dir()
        message += f" Every finished epoch is kept in {output}; run the same command to resume."
    elif args.command in ("predict", "embed") and getattr(args, "output", None):
        message += (
            f" Every finished chunk is kept beside {args.output}; run the same command to resume."
        )
    return message


def _data_error(error):
    """The one line of a `ValueError` that a tf.data reader raised (a damaged file), else None.

    tf.data raises it again as an `InvalidArgumentError` wrapped in node and iterator
    names; its own words are what the user needs.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.InvalidArgumentError):
        return None
    match = re.search(r"ValueError: ([^\n]*)", error.message)
    return match.group(1) if match else None


def main(argv=None):
    """Entry point of the `keras-astro` console script; `argv=None` reads `sys.argv`.

    Run as the console script (`argv=None`), native log lines are hidden unless
    `--verbose`; called from Python, the process' descriptors are left alone.
    """
    from keras_astro.cli.arguments import select_backend

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if argv is None and not args.verbose:
        hide_native_logs()
        # TensorFlow's Python warnings about tf.function retracing: each model that
        # `predict` or `evaluate` builds traces its own, which is expected here.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    def fail(status, message):
        if args.verbose:
            traceback.print_exc()
        parser.exit(status, f"keras-astro {args.command}: error: {message}\n")

    try:
        if args.command in ("train", "evaluate", "predict", "embed", "similar", "demo"):
            require(f"keras-astro {args.command}", "train", *TRAIN_EXTRA)
        select_backend(getattr(args, "backend", None))
        _subcommand(args.command).run(args)
    except ValueError as error:
        fail(2, error)
    except OSError as error:  # an unwritable --output, a full disk: the system's own words
        fail(1, error)
    except ImportError as error:  # an extra that is not installed: its pip command
        fail(1, error)
    except Exception as error:
        message = _data_error(error)
        if message is None:
            raise
        fail(2, message)
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        raise SystemExit(130) from None
