"""A registry of named, lazily imported parts (implementations, meters) that users can extend without editing it.

Built-in parts are named as ``name -> (module, attribute)`` and imported on first use, so a missing optional
dependency (triton) costs that one part, not the registry. Parts from outside the package come from an
environment variable ("module:ATTRIBUTE,..."; it reaches ``run --isolate`` workers and the gate's sides too) or
from :meth:`Registry.registered` for a block of code.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from typing import Generic, TypeVar

Part = TypeVar("Part")


class Registry(Generic[Part]):
    def __init__(self, kind: str, part_type: type, env: str, builtins: dict[str, tuple[str, str]]) -> None:
        self.kind, self.part_type, self.env = kind, part_type, env
        #: name -> (module, attribute), in registration order (the order names() gives)
        self.entries: dict[str, tuple[str, str]] = dict(builtins)
        self.loaded: dict[str, Part] = {}

    def _import(self, module: str, attr: str, where: str) -> Part:
        try:
            part = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{where} {module}:{attr} cannot be loaded: {exc}.") from None
        if not isinstance(part, self.part_type):
            raise ValueError(f"{where} {module}:{attr} is not a {self.part_type.__name__}.")
        return part

    def load_plugins(self) -> None:
        """Register what the environment variable names (idempotent: a name already known keeps its part)."""
        for entry in filter(None, (e.strip() for e in os.environ.get(self.env, "").split(","))):
            module, _, attr = entry.partition(":")
            if not attr:
                raise ValueError(f"{self.env} entry {entry!r} must look like module:ATTRIBUTE.")
            if (module, attr) in self.entries.values():
                continue
            part = self._import(module, attr, self.env)
            if part.name not in self.entries:
                self.entries[part.name] = (module, attr)
                self.loaded[part.name] = part

    def names(self) -> list[str]:
        self.load_plugins()
        return list(self.entries)

    def get(self, name: str) -> Part:
        """The part called ``name``; ValueError (one sentence) for an unknown name."""
        if name not in self.names():
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self.entries)}.")
        if name not in self.loaded:
            self.loaded[name] = self._import(*self.entries[name], self.kind)
        return self.loaded[name]

    @contextlib.contextmanager
    def registered(self, *parts: Part) -> Iterator[None]:
        """Register ``parts`` (after the others) in this process for the duration of the block."""
        names = [getattr(part, "name", None) for part in parts]
        for part, name in zip(parts, names):
            if not isinstance(part, self.part_type):
                raise ValueError(f"only a {self.part_type.__name__} can be registered, got {part!r}.")
            if name in self.names() or names.count(name) > 1:
                raise ValueError(f"a {self.kind} called {name!r} is already registered.")
        for part, name in zip(parts, names):
            self.entries[name] = ("", name)
            self.loaded[name] = part
        try:
            yield
        finally:
            for name in names:
                self.entries.pop(name, None)
                self.loaded.pop(name, None)
