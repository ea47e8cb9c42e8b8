"""How often a galaxy's nearest neighbours in a trained model's embedding share its class.

Embeds every image of a `train/<class>/`, `test/<class>/` folder with `keras_astro.survey`'s
`embed` (the path `keras-astro embed` takes), then for each test object finds its k
nearest other objects among all of them (`keras_astro.survey.similar.nearest`, cosine)
and counts the neighbours of its own class. Chance is the same count for neighbours
drawn at random: the sum over classes of (test share) x (share among all objects).

    python benchmarks/embedding_neighbours.py runs/rings/model.keras ../shared/data/galaxy-rings --k 5

Prints a markdown row: objects, k, share of same-class neighbours, chance.
"""

import argparse
import os
import tempfile

import numpy as np


def class_of(path, root):
    """The class folder of `path` below root/<split>/<class>/, and the split."""
    split, name = os.path.relpath(path, root).split(os.sep)[:2]
    return split, name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model.keras saved by keras-astro train")
    parser.add_argument("data_dir", help="a folder of train/<class>/ and test/<class>/ images")
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()

    from keras_astro.models.saving import load_model
    from keras_astro.survey.objects import find_objects
    from keras_astro.survey.predict import embed
    from keras_astro.survey.similar import load_embeddings, nearest

    model = load_model(args.model)
    objects = find_objects([args.data_dir])
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "embeddings.npy")
        failed = embed(model, args.model, objects, output, progress=False)
        features, table = load_embeddings(output)
    if failed:
        raise SystemExit(f"{failed} image(s) failed to embed; see their error column.")
    splits, labels = zip(*(class_of(path, args.data_dir) for path in table["path"]))
    labels = np.array(labels)
    test = np.flatnonzero(np.array(splits) == "test")
    found, _ = nearest(features, test, k=args.k)
    same = float(np.mean(labels[found] == labels[test][:, None]))
    names, counts = np.unique(labels, return_counts=True)
    share_all = dict(zip(names, counts / len(labels)))
    chance = float(np.mean([share_all[label] for label in labels[test]]))
    print("| objects (test queries) | k | neighbours of the query's class | chance |")
    print("| --- | --- | --- | --- |")
    print(f"| {len(labels)} ({len(test)}) | {args.k} | {same:.1%} | {chance:.1%} |")


if __name__ == "__main__":
    main()
