"""keras_astro's folders import one way: utils -> layers -> models -> data -> training ->
survey -> export -> cli.

A module imports its own folder and the ones before it, never one after it, so each
level can be read, tested and reused without those above it, and no two folders import
each other. Imports inside functions count: they are the same dependency, run later.
The package's `__init__` is outside the order: its lazy table names every level.
"""

import ast
import pathlib

import keras_astro

LEVELS = ("utils", "layers", "models", "data", "training", "survey", "export", "cli")
PACKAGE = pathlib.Path(keras_astro.__file__).resolve().parent


def modules():
    """{dotted name: path} of every module of keras_astro but the package's `__init__`."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            found[".".join(parts)] = path
    return found


def level(module):
    """The folder or top-level module that `module` belongs to ("keras_astro" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imported_modules(module, path, known):
    """The keras_astro modules that `module` imports, at module level or in a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                if base == "keras_astro" and alias.name.startswith("__"):
                    continue  # the package's metadata (`__version__`) loads no level
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in known else base


def folder_edges():
    """{(importing folder, imported folder): sorted "module -> module" lines}."""
    known = modules()
    edges = {}
    for module, path in known.items():
        for target in imported_modules(module, path, known):
            if target.split(".")[0] == "keras_astro" and level(target) != level(module):
                edges.setdefault((level(module), level(target)), set()).add(f"{module} -> {target}")
    return {edge: sorted(lines) for edge, lines in sorted(edges.items())}


def test_every_module_has_a_level():
    assert {level(module) for module in modules()} <= set(LEVELS)


def test_no_folder_imports_a_later_one():
    def rank(name):  # the package root counts as the top: it imports every level
        return LEVELS.index(name) if name in LEVELS else len(LEVELS)

    upward = {
        f"{source} -> {target}": lines
        for (source, target), lines in folder_edges().items()
        if rank(target) > rank(source)
    }
    assert upward == {}


def test_imports_in_functions_and_relative_imports_are_seen(tmp_path):
    path = tmp_path / "example.py"
    path.write_text("def load():\n    from ..models import saving\n    import keras_astro.cli\n")
    known = {"keras_astro.models.saving": path, "keras_astro.cli": path}
    assert list(imported_modules("keras_astro.layers.example", path, known)) == [
        "keras_astro.models.saving",
        "keras_astro.cli",
    ]
