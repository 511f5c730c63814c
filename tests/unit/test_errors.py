"""kubejob/errors.py's docstring tree, held to the classes: each with the parent it is written under, and every
exception class of ours in it once."""

import importlib
import pkgutil
import re

from kubejob import errors

PACKAGES = ("kubejob", "producer", "worker", "scaler")
ENTRY = re.compile(r"(?P<indent> *)\* (?P<name>[\w.]+) — \S")


def _class(name: str) -> type:
    """`Name` is in kubejob.errors; `module.Name` in that module."""
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module) if module else errors, attribute)


def _tree() -> list[tuple[type, type | None]]:
    """(class, the class it is written under) for each entry, in order."""
    assert errors.__doc__ is not None
    entries, above = [], []
    for line in errors.__doc__.splitlines():
        entry = ENTRY.match(line)
        if entry is None:
            continue
        depth, indent = divmod(len(entry["indent"]), 2)
        assert indent == 0 and depth <= len(above), f"not indented by one level: {line!r}"
        del above[depth:]
        cls = _class(entry["name"])
        entries.append((cls, above[-1] if above else None))
        above.append(cls)
    return entries


def _defined() -> set[type]:
    """Every exception class defined in our packages (the entry points left out: importing one runs it)."""
    found = set()
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        for module_info in pkgutil.iter_modules(path, f"{package}."):
            if module_info.name.endswith(".__main__"):
                continue
            module = importlib.import_module(module_info.name)
            found |= {value for value in vars(module).values() if isinstance(value, type)
                      and issubclass(value, BaseException) and value.__module__ == module.__name__}
    return found


def test_every_class_in_the_tree_has_the_parent_it_is_written_under() -> None:
    tree = _tree()
    assert tree[0] == (errors.KubeJobError, None)
    assert errors.KubeJobError.__bases__ == (Exception,)
    wrong = [(cls.__qualname__, parent.__qualname__, cls.__bases__) for cls, parent in tree[1:]
             if parent is None or parent not in cls.__bases__]
    assert wrong == []


def test_every_exception_class_of_ours_is_in_the_tree_once() -> None:
    written = [cls for cls, _ in _tree()]
    assert len(written) == len(set(written))
    assert {f"{c.__module__}.{c.__qualname__}" for c in _defined()} == \
        {f"{c.__module__}.{c.__qualname__}" for c in written}
