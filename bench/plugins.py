"""Plug-ins through entry-point groups (``anobench.generators``, ``anobench.detectors``).

A plug-in is registered under its entry-point name; its class must declare that same ``name``
(a class without one is an error that says so). A plug-in that fails to load is an error
naming it, not a warning: a benchmark must not silently run without a component it was given.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Container, Iterable

from anobench.errors import AnobenchError


def load_entry_points(group: str, kind: str, registered: Container[str],
                      register: Callable[[str, Any, str], None], entry_points: Callable,
                      builtin_modules: Iterable[str] = ()) -> None:
    """Import the built-in modules (they register themselves), then load every entry point of
    ``group`` not yet registered and hand it to ``register``."""
    for module in builtin_modules:
        importlib.import_module(module)
    for ep in entry_points(group=group):
        if ep.name in registered:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - whatever the plug-in raises, named in one line
            raise AnobenchError(f"{kind} plug-in {ep.name!r} ({ep.value}) failed to load: {exc}") from None
        register(ep.name, obj, ep.value)


def check_declared_name(kind: str, name: str, cls: type, base: type, where: str) -> None:
    """The class (or a parent below ``base``) must declare ``name`` equal to the entry point's."""
    declared = next((k.__dict__["name"] for k in cls.__mro__ if k is not base and issubclass(k, base)
                     and "name" in k.__dict__), None)
    if not declared:
        raise AnobenchError(f"{kind} plug-in {name!r} ({where}): class {cls.__qualname__} has no name; "
                            f"set name = {name!r}")
    if declared != name:
        raise AnobenchError(f"{kind} plug-in {name!r} ({where}): class {cls.__qualname__} is named "
                            f"{declared!r}; the entry point must use that name")
