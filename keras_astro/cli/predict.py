"""`keras-astro predict`: the top-k classes of image or FITS files, or a table of a survey."""

from keras_astro.cli.arguments import add_backend_argument, positive_int

HELP = "top-k classes of image or FITS files, or a table of a whole survey"
DESCRIPTION = (
    "Print the top-k class names and probabilities for each file: photos (jpg, png, bmp, "
    "gif) or FITS cutouts, at their original size: they are cropped and resized as the "
    "model's training data was. A file that cannot be read, that is not the kind the model "
    "takes (FITS for a flux model, photos for a pixel model), or that has a band without "
    "a finite pixel, is reported and the others are still predicted (the exit code is then 2). "
    "With --output, write one row per object to a CSV or Parquet table instead: the class, "
    "every class' probability, the entropy and an error column, in chunks that a killed run "
    "resumes when the same command is run again (docs/survey.md)."
)


def add_source_arguments(parser, verb):
    """The inputs, output, shard and chunk options that `predict` and `embed` share."""
    parser.add_argument("model", metavar="MODEL.keras", help="a saved model")
    parser.add_argument(
        "images", metavar="INPUT", nargs="*",
        help="jpg, png, bmp, gif or FITS files, folders of them (recursively, in sorted "
        "order) or text lists of them (.txt, .lst, .list: a path a line, relative to the list)",
    )
    parser.add_argument(
        "--catalog", metavar="TABLE.csv",
        help=f"a catalogue to {verb}: a column of file paths (relative to the table's folder); "
        "its other columns are kept in the output",
    )
    parser.add_argument("--path-column", default="file_loc",
                        help="the catalogue's column of file paths (default: file_loc)")
    parser.add_argument("--data-file", metavar="FILE.h5",
                        help=f"an HDF5 file of images to {verb}, identified by row")
    parser.add_argument("--images-key", default="images",
                        help="the HDF5 dataset of images (default: images)")
    parser.add_argument(
        "--shard", metavar="I/N",
        help="the I-th (from 0) of N contiguous slices of the input, for job arrays; the "
        "shards' outputs concatenated in order are the whole",
    )
    parser.add_argument("--chunk-size", type=positive_int, default=1024,
                        help="objects written at a time: what a killed run loses at most "
                        "(default: 1024)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per model call (default: 64)")
    add_backend_argument(parser)


def add_arguments(parser):
    add_source_arguments(parser, "predict")
    parser.add_argument(
        "--output", metavar="TABLE.csv",
        help="write a table (.csv, or .parquet with the parquet extra) of every object "
        "instead of printing; run the same command again to resume a killed run",
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=3, help="classes shown per image (default: 3)"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average the probabilities of the 8 symmetries of the square (with --output, "
        "their spread is the tta_spread column); a model trained with --augment dihedral "
        "or rotate averages them already, and --tta adds the spread",
    )


def load_objects(args):
    """(model, the objects of --shard or all) of a `predict` or `embed` command line."""
    from keras_astro.models.saving import load_model
    from keras_astro.survey.objects import find_objects, parse_shard, shard

    spec = parse_shard(args.shard) if args.shard else None
    objects = find_objects(args.images, args.catalog, args.path_column, args.data_file,
                           args.images_key)
    return load_model(args.model), shard(objects, *spec) if spec else objects


def run(args):
    import sys

    from keras_astro.survey.predict import predict_table, print_top_classes
    from keras_astro.utils import check_classifier

    model, objects = load_objects(args)
    check_classifier(model, "predict")
    if args.output is None:
        failures = print_top_classes(model, objects, args.top_k, args.tta, args.batch_size)
    else:
        failures = predict_table(
            model, args.model, objects, args.output, args.tta, chunk_size=args.chunk_size,
            batch_size=args.batch_size, progress=sys.stderr.isatty(),
        )
        if not failures:
            print(f"Wrote {args.output}")
    if failures:
        where = "" if args.output is None else f" (their error column in {args.output})"
        raise ValueError(
            f"{failures} of {len(objects)} file(s) could not be predicted{where}."
        )
