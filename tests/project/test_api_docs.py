"""The API reference (book/api/): every module has an automodule page, every public name is rendered and summarised.

No Sphinx build here: these checks read the pages and import the package. The build itself (``jupyter-book build
-W``) catches RST errors in the docstrings.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from sphinx.pycode import ModuleAnalyzer

import diffu

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "book" / "api"
PAGES = sorted(API.glob("*.md"))
MODULES = {
    name: importlib.import_module(name)
    for name in ["diffu"] + [m.name for m in pkgutil.walk_packages(diffu.__path__, "diffu.")]
    if not name.endswith("__main__")
}


def _directives():
    """``{module: (page, {option: value})}`` for every ``.. automodule::`` in the API pages."""
    found = {}
    for page in PAGES:
        for m in re.finditer(r"^\.\. automodule:: (\S+)\n((?:   :[\w-]+:.*\n)*)", page.read_text(), re.M):
            assert m.group(1) not in found, f"{m.group(1)} has two automodule directives (duplicate objects)"
            options = dict(re.findall(r":([\w-]+):[ \t]*(.*)", m.group(2)))
            found[m.group(1)] = (page, options)
    return found


DIRECTIVES = _directives()
DOCUMENTED = {name for name, (_, options) in DIRECTIVES.items() if "members" in options}


def _all(module):
    return getattr(module, "__all__", ())


def _is_data(obj):
    return not (inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj))


def test_pages_exist_and_are_in_the_toc():
    assert len(PAGES) >= 2
    toc = (ROOT / "_toc.yml").read_text()
    for page in PAGES:
        assert f"file: {page.relative_to(ROOT).with_suffix('').as_posix()}" in toc, f"{page.name} is not in _toc.yml"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_has_an_automodule_directive(name):
    assert name in DIRECTIVES, f"no '.. automodule:: {name}' in book/api/*.md"
    if not hasattr(MODULES[name], "__all__"):
        assert name in DOCUMENTED, f"{name} has no __all__: its automodule needs :members:"


@pytest.mark.parametrize("name", sorted(n for n, m in MODULES.items() if hasattr(m, "__all__")))
def test_every_public_name_is_rendered(name):
    """Each name of ``__all__`` is documented by an ``automodule … :members:`` of a module whose ``__all__`` holds
    the same object: its own, or (for the re-exporting packages diffu.nn and diffu.inverse) the submodule that
    defines it. Module-level data needs a ``#:`` doc comment, without which autodoc silently drops it."""
    module = MODULES[name]
    for attr in module.__all__:
        obj = getattr(module, attr)
        owners = [d for d in DOCUMENTED if getattr(MODULES[d], attr, None) is obj and attr in _all(MODULES[d])]
        assert owners, f"{name}.{attr} is not in the __all__ of any module documented with automodule :members:"
        if not _is_data(obj):
            continue
        for owner in owners:
            comments = ModuleAnalyzer.for_module(owner).find_attr_docs()
            assert ("", attr) in comments, f"{owner}.{attr} needs a '#:' doc comment to appear in the API reference"
            # napoleon reads "text: more" on an attribute's first line as "type: description"
            first = re.sub(r"``.*?``|:\w+:`[^`]*`", "", comments["", attr][0])
            assert ":" not in first, f"{owner}.{attr}: no colon on the first line of its '#:' comment ({first!r})"
            if attr.startswith("__"):
                special = DIRECTIVES[owner][1].get("special-members", "")
                assert attr in special.replace(",", " ").split(), f"add ':special-members: {attr}' for {owner}"


def test_index_summarises_every_public_name():
    """book/api/index.md has one autosummary table per documented module, listing exactly its ``__all__``."""
    text = (API / "index.md").read_text()
    table = r"^\.\. currentmodule:: (\S+)\n\n\.\. autosummary::\n   :nosignatures:\n\n((?:   \S+\n)+)"
    tables = {m.group(1): m.group(2).split() for m in re.finditer(table, text, re.M)}
    for name in sorted(DOCUMENTED):
        expected = getattr(MODULES[name], "__all__", None)
        if expected is None:  # the benchmark modules: summarised as modules, not per name
            continue
        assert name in tables, f"book/api/index.md has no autosummary table for {name}"
        assert sorted(tables[name]) == sorted(expected), f"index.md's table for {name} differs from its __all__"


def test_every_module_section_says_which_chapters_use_it():
    for page in PAGES:
        if page.name == "index.md":
            continue
        sections = re.split(r"^## ", page.read_text(), flags=re.M)[1:]
        assert sections, page.name
        for section in sections:
            title = section.splitlines()[0]
            assert re.search(r"^Used in", section, re.M), f"{page.name}: section {title} has no 'Used in' line"
            for target in re.findall(r"\{doc\}`\.\./([^`]+)`", section):
                assert (ROOT / "book" / f"{target}.ipynb").exists(), f"{page.name} links a missing chapter {target}"


def _documented_at(path: str) -> bool:
    """Whether ``diffu.x.name[.attr]`` names an object documented at that path: a documented module, a name of its
    ``__all__`` (or, for a module without one, a public name it defines), or an attribute of such an object."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        if module in MODULES:
            break
    else:
        return False
    rest = parts[i:]
    if not rest:
        return module in DIRECTIVES
    mod = MODULES[module]
    if module not in DOCUMENTED or not hasattr(mod, rest[0]):
        return False
    obj = getattr(mod, rest[0])
    if hasattr(mod, "__all__"):
        if rest[0] not in mod.__all__:
            return False
    elif rest[0].startswith("_") or getattr(obj, "__module__", module) != module:
        return False
    for attr in rest[1:]:
        if not hasattr(obj, attr):
            return False
        obj = getattr(obj, attr)
    return True


def test_every_api_reference_in_the_book_resolves():
    """``{py:func}`~diffu.x.name``` links in chapters, labs and pages point where the name is documented: Sphinx
    renders a reference to a moved or re-exported name as plain text, without a warning, so the build cannot
    catch it."""
    files = [*(ROOT / "book").glob("*.ipynb"), *(ROOT / "book").glob("*.md"), *API.glob("*.md")]
    files += [*(ROOT / "labs").glob("*.md"), *(ROOT / "labs" / "source").glob("*/*.ipynb")]
    bad = sorted(
        f"{path.relative_to(ROOT)}: {ref}"
        for path in files
        for ref in set(re.findall(r"\{py:[a-z]+\}`~?(diffu(?:\.\w+)*)`", path.read_text()))
        if not _documented_at(ref)
    )
    assert len(files) > 30 and bad == [], bad


def test_reference_checker_rejects_moved_and_undocumented_paths():
    assert _documented_at("diffu.sampling.Trajectory") and _documented_at("diffu.schedules.Schedule.alpha_bar_at")
    assert _documented_at("diffu.inverse.dps.dps") and _documented_at("diffu.bench.inverse.bench_inverse")
    assert not _documented_at("diffu.samplers.Trajectory")  # importable there, documented in diffu.sampling
    assert not _documented_at("diffu.sde.pf_ode")  # moved to diffu.sde_samplers
    assert not _documented_at("diffu.nn.UNet")  # the package re-exports it; the page documents diffu.nn.unet.UNet
