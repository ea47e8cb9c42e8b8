"""`keras-astro embed`: the pooled features of every object, for similarity search."""

from keras_astro.cli.predict import add_source_arguments

HELP = "pooled features of a survey's objects, for `similar`"
DESCRIPTION = (
    "Write the features the classifier reads (the output of the model's avg_pool layer) for "
    "each object to EMB.npy, and their identifiers table to EMB.csv beside it (its columns, "
    "and an error column: a file that fails has NaN features). Inputs, --shard and resuming "
    "a killed run with the same command are as for `predict --output` (docs/survey.md)."
)


def add_arguments(parser):
    add_source_arguments(parser, "embed")
    parser.add_argument("--output", metavar="EMB.npy", required=True,
                        help="the embeddings; their table is written beside it as EMB.csv")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="of the stored features (default: float16, half the size)")


def run(args):
    import sys

    from keras_astro.cli.predict import load_objects
    from keras_astro.survey.chunks import embedding_table
    from keras_astro.survey.predict import embed

    model, objects = load_objects(args)
    failures = embed(model, args.model, objects, args.output, args.dtype,
                     chunk_size=args.chunk_size, batch_size=args.batch_size,
                     progress=sys.stderr.isatty())
    print(f"Wrote {args.output} and {embedding_table(args.output)}")
    if failures:
        raise ValueError(
            f"{failures} of {len(objects)} file(s) could not be embedded (their error column "
            f"in {embedding_table(args.output)})."
        )
