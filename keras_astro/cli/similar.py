"""`keras-astro similar`: the nearest objects of a query in embeddings, and anomaly scores."""

from keras_astro.cli.arguments import positive_int

HELP = "nearest neighbours and anomaly scores in `embed`'s embeddings"
DESCRIPTION = (
    "List the k objects nearest to each QUERY (a value naming one row of the embeddings "
    "table, such as a path, or a row number) by the cosine distance of their features, and "
    "optionally draw them as a grid of cutouts. --anomaly writes the table with each "
    "object's distance to its k-th neighbour (high: unlike the rest) and prints the most "
    "anomalous."
)


def add_arguments(parser):
    parser.add_argument("embeddings", metavar="EMB.npy", help="what `keras-astro embed` wrote")
    parser.add_argument("queries", metavar="QUERY", nargs="*", help="objects to find neighbours of")
    parser.add_argument("--k", type=positive_int, default=5, help="neighbours (default: 5)")
    parser.add_argument("--plot", metavar="GRID.png",
                        help="draw each query and its neighbours (cutouts) in a grid")
    parser.add_argument("--data-file", metavar="FILE.h5",
                        help="the HDF5 file whose rows were embedded, for --plot")
    parser.add_argument("--images-key", default="images", help="its dataset of images")
    parser.add_argument("--anomaly", metavar="TABLE.csv",
                        help="write the embeddings table with an anomaly column")


def run(args):
    import numpy as np

    from keras_astro.survey import similar

    if not args.queries and not args.anomaly:
        raise ValueError("Expected a QUERY, or --anomaly TABLE.csv: nothing to do.")
    features, table = similar.load_embeddings(args.embeddings)
    label = next(iter(table))
    if args.queries:
        rows = [similar.find_row(table, query) for query in args.queries]
        found, distances = similar.nearest(features, rows, args.k)
        for query, neighbours, far in zip(args.queries, found, distances):
            print(f"{query}: " + ", ".join(
                f"{table[label][n]} ({d:.3f})" for n, d in zip(neighbours, far)))
        if args.plot:
            similar.plot_neighbours(args.plot, table, rows, found, distances, args.data_file,
                                    args.images_key)
            print(f"Wrote {args.plot}")
    if args.anomaly:
        scores = similar.anomaly_scores(features, args.k)
        similar.write_anomalies(args.anomaly, table, scores)
        ranked = [i for i in np.argsort(-np.nan_to_num(scores, nan=-1.0))[:10]
                  if np.isfinite(scores[i])]
        print(f"Wrote {args.anomaly}; the most anomalous (distance to the {args.k}th neighbour):")
        for i in ranked:
            print(f"  {table[label][i]}: {scores[i]:.3f}")
