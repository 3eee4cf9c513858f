"""The shape of the package (CONTRIBUTING.md, "Layers"): imports only point downwards through the layers below, no
import cycle inside ``diffu``, and no module that reaches into another module's private (underscore) names.

The graph is read from the source with :mod:`ast`, so imports inside functions (lazy imports) count as edges too: a
lazy import hides a cycle from Python's import system but not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "diffu"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the package (``pkg/__init__.py`` is ``pkg``)."""
    mods = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of the module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(package: Path = PACKAGE) -> tuple[dict[str, set[str]], list[str]]:
    """(edges, private uses): ``edges[m]`` are the package modules ``m`` imports anywhere in its body; private uses
    are lines ``"m imports t._name"`` for underscore names taken from another module of the package."""
    mods = module_files(package)
    root = package.name
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: dict[str, str] = {}  # local name → package module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(mod, path.name == "__init__.py", node)
                if target != root and not target.startswith(root + "."):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:  # `from . import samplers`: the submodule itself
                        edges[mod].add(sub)
                        aliases[alias.asname or alias.name] = sub
                        continue
                    if target in mods:
                        edges[mod].add(target)
                    if _is_private(alias.name) and target != mod:
                        private.append(f"{mod} imports {target}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        edges[mod].add(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
        for node in ast.walk(tree):  # `captions._helper` through a module alias
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _is_private(node.attr)
                and aliases[node.value.id] != mod
            ):
                private.append(f"{mod} uses {aliases[node.value.id]}.{node.attr}")
        edges[mod].discard(mod)
    return edges, sorted(set(private))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in edges:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


#: The layers of CONTRIBUTING.md, bottom first: a module may import its own layer and the layers below it. A module
#: belongs to the longest prefix listed; command-line entry points (``__main__``) sit on top.
LAYERS = (
    ("diffu", "diffu.checks", "diffu.data", "diffu.captions"),
    ("diffu.schedules", "diffu.nn"),
    ("diffu.sampling", "diffu.ode", "diffu.train", "diffu.pretrained", "diffu.metrics"),
    ("diffu.samplers", "diffu.sde", "diffu.sde_samplers", "diffu.flow", "diffu.compare", "diffu.gmm"),
    ("diffu.guidance", "diffu.diffusion_priors", "diffu.text_to_image", "diffu.representations"),
    ("diffu.inverse", "diffu.medical", "diffu.segmentation", "diffu.control", "diffu.distill", "diffu.viz"),
    ("diffu.recipes",),
    ("diffu.bench", "diffu.book"),
)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of a module (``None`` when no prefix matches)."""
    if module.endswith(".__main__"):
        return len(LAYERS)
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    return found


def test_graph_reader_finds_cycles_and_private_imports(tmp_path):
    """The checker itself: on a made-up package with one cycle (through a lazy import) and two private uses, it
    reports exactly those."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n\ndef _own():\n    return 1\n")
    (pkg / "b.py").write_text("def thing():\n    from .a import _own\n    return _own()\n")
    (pkg / "c.py").write_text("from . import b\nfrom .sub import leaf, value\n\nx = b._hidden\n")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import value\n")
    (pkg / "sub" / "leaf.py").write_text("value = 1\n")
    edges, private = import_graph(pkg)
    assert edges["toy.c"] == {"toy.b", "toy.sub", "toy.sub.leaf"} and edges["toy.sub"] == {"toy.sub.leaf"}
    assert cycles(edges) == [["toy.a", "toy.b"]]
    assert private == ["toy.b imports toy.a._own", "toy.c uses toy.b._hidden"]


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_graph_covers_the_package(graph):
    edges, _ = graph
    assert {"diffu", "diffu.samplers", "diffu.schedules", "diffu.inverse", "diffu.nn"} <= set(edges)
    assert "diffu.schedules" in edges["diffu.samplers"]


def test_every_module_has_a_layer(graph):
    edges, _ = graph
    assert [m for m in edges if layer_of(m) is None] == [], "add new modules to LAYERS (and CONTRIBUTING.md)"
    assert layer_of("diffu.inverse.dps") == layer_of("diffu.inverse") and layer_of("diffu.pretrained.__main__") == 8
    assert layer_of("diffu") == 0 and layer_of("diffu.nn.unet") == 1


def test_imports_point_downwards(graph):
    edges, _ = graph
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in edges.items()
        for t in sorted(targets)
        if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m)
    ]
    assert upward == [], "an import points up the layers of CONTRIBUTING.md"


def test_no_import_cycles(graph):
    edges, _ = graph
    assert cycles(edges) == [], "import cycles inside diffu (lazy imports included)"


def test_no_private_cross_module_imports(graph):
    _, private = graph
    assert private == [], "modules reach into other modules' private names; make the shared piece public"
