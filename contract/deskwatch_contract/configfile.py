"""Declarative config sections and a loader that reports every error with its YAML line.

A section is a dataclass whose fields are declared with :func:`setting`; the field
type (``int``, ``float``, ``str``, ``bool``, ``Literal[...]``, ``list[X]``,
``dict[str, X]``, ``X | None`` or another section) drives conversion, and the
metadata carries the documentation, ranges and file checks. Each stage keeps the
section it owns next to its code (the appliance's ``deskwatch/camera/config.py``,
the contract's ``mqttconfig.py`` ...); a root section assembles them (the appliance's
``deskwatch/config/root.py``, the companion's ``deskwatch_desk/config.py``).

After a section is built its optional ``validate(self, report)`` method runs for
checks that involve more than one field; ``report(key, message)`` attaches the
problem to that key's line.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from typing import Any, Literal, get_args, get_origin

import yaml

Report = Callable[[str, str], None]


@dataclass(frozen=True)
class ConfigIssue:
    line: int | None  # 1-based, None when the key is absent from the file
    key: str  # dotted path, e.g. "mqtt.tls.ca_file"
    value: str | None  # the offending value as written, shortened
    message: str  # what is wrong and what to do

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        value = f" = {self.value}" if self.value is not None else ""
        return f"{where}: {self.key}{value}: {self.message}"


class ConfigError(Exception):
    """Raised with every problem found, not just the first."""

    def __init__(self, filename: str, issues: list[ConfigIssue]):
        self.filename = filename
        self.issues = sorted(issues, key=lambda i: (i.line or 0, i.key))
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"{self.filename}: {n} configuration error{'s' if n != 1 else ''}:"
        return "\n".join([head] + ["  " + i.format(self.filename) for i in self.issues])


def setting(
    default: Any = MISSING,
    *,
    doc: str,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
    hint: str | None = None,
    path: Literal["file", "dir", "parent"] | None = None,
    secret: bool = False,
    example: Any = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare a config field.

    ``path="file"`` requires an existing readable file, ``"dir"`` an existing
    directory, ``"parent"`` only an existing parent directory (created later).
    ``secret=True`` marks a file holding a secret: it must not be readable by
    others (mode & 0o077 == 0 for group/other write, 0o004 for other read).
    ``example`` is what ``config.example.yaml`` shows when it differs from the default.
    """
    meta = {
        "doc": doc,
        "minimum": minimum,
        "maximum": maximum,
        "pattern": pattern,
        "hint": hint,
        "path": path,
        "secret": secret,
        "example": example,
    }
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_inner(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _optional_inner(tp)
    if optional:
        return _type_name(inner) + " or null"
    origin = get_origin(inner)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(inner))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if is_section(inner):
        return "a mapping"
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(inner, str(inner))


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, base_dir: str):
        self.loader = loader
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        self.lines: dict[str, int] = {}
        self.failed: set[str] = set()  # keys whose value was rejected

    def issue(self, node: yaml.Node | None, key: str, value: Any, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else self.lines.get(key)
        shown = None if value is None else _short(value)
        self.issues.append(ConfigIssue(line, key, shown, message))

    def report_for(self, prefix: str) -> Report:
        def report(key: str, message: str) -> None:
            full = f"{prefix}.{key}" if prefix and key else (prefix or key)
            if any(full == f or full.startswith((f + ".", f + "[")) for f in self.failed):
                return
            line = self.lines.get(full)
            probe = full
            while line is None and "." in probe:
                probe = probe.rsplit(".", 1)[0]
                line = self.lines.get(probe)
            self.issues.append(ConfigIssue(line, full, None, message))

        return report

    # -- conversion -------------------------------------------------------------------
    def section(self, cls: type, node: yaml.Node | None, key: str) -> tuple[Any, bool]:
        """Build one section. Returns (object, ok); the object has defaults standing in
        for rejected values, so that enclosing cross-field checks can still run."""
        if node is not None and not isinstance(node, yaml.MappingNode):
            if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null"):
                node = None
            else:
                self.issue(node, key or "(top level)", None, "must be a mapping of keys to values")
                self.failed.add(key)
                return None, False
        given: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        if node is not None:
            for knode, vnode in node.value:
                name = str(knode.value)
                if name in given:
                    self.issue(knode, _join(key, name), None, "appears twice; keep one")
                given[name] = (knode, vnode)
        known = {f.name: (f, tp) for f, tp in section_fields(cls)}
        values: dict[str, Any] = {}
        ok = True
        for name, (knode, _vnode) in given.items():
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"did you mean '{close[0]}'?" if close else "remove it"
                choices = ", ".join(sorted(known))
                self.issue(knode, _join(key, name), None, f"unknown key; {hint} (known: {choices})")
                ok = False
        for name, (f, tp) in known.items():
            full = _join(key, name)
            if name in given:
                knode, vnode = given[name]
                self.lines[full] = knode.start_mark.line + 1
                value, good = self.value(tp, vnode, full, f.metadata)
                if value is not None or good:
                    values[name] = value
                if not good:
                    ok = False
                    if value is None:
                        self.failed.add(full)
            elif f.default is MISSING and f.default_factory is MISSING:
                where = node.start_mark.line + 1 if node is not None else None
                self.issues.append(ConfigIssue(where, full, None, f"is required: {f.metadata.get('doc', '')}"))
                ok = False
                self.failed.add(full)
        # Cross-field checks still run when a field was rejected (with its default in
        # its place) so that one run reports everything; what they say about a key
        # that is already in error, or that the stand-in default caused, is dropped.
        for name, (f, _tp) in known.items():
            if name not in values and _join(key, name) in self.failed:
                if f.default is not MISSING:
                    values[name] = f.default
                elif f.default_factory is not MISSING:
                    values[name] = f.default_factory()
                else:
                    return None, False  # a required value is missing: nothing sensible to check
        try:
            obj = cls(**values)
        except (TypeError, ValueError) as exc:  # pragma: no cover - declared defaults are valid
            self.issue(node, key, None, str(exc))
            return None, False
        validate = getattr(obj, "validate", None)
        if callable(validate):
            before = len(self.issues)
            validate(self.report_for(key))
            ok = ok and len(self.issues) == before
        return obj, ok

    def value(self, tp: Any, node: yaml.Node, key: str, meta: Any) -> tuple[Any, bool]:
        optional, inner = _optional_inner(tp)
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            if is_section(inner) and not optional:
                return self.section(inner, None, key)  # "key:" with nothing under it: all defaults
            if optional:
                return None, True
            self.issue(node, key, None, f"must be {_type_name(tp)}, not empty")
            return None, False
        if is_section(inner):
            return self.section(inner, node, key)
        origin = get_origin(inner)
        if origin is list:
            (item_tp,) = get_args(inner)
            if not isinstance(node, yaml.SequenceNode):
                self.issue(node, key, None, "must be a list (- item per line, or [a, b])")
                return None, False
            items, good = [], True
            for i, child in enumerate(node.value):
                v, g = self.value(item_tp, child, f"{key}[{i}]", meta)
                items.append(v)
                good = good and g
            return (items, True) if good else (None, False)
        if origin is dict:
            _, val_tp = get_args(inner)
            if not isinstance(node, yaml.MappingNode):
                self.issue(node, key, None, "must be a mapping")
                return None, False
            out, good = {}, True
            for knode, vnode in node.value:
                v, g = self.value(val_tp, vnode, f"{key}.{knode.value}", meta)
                out[str(knode.value)] = v
                good = good and g
            return (out, True) if good else (None, False)
        if not isinstance(node, yaml.ScalarNode):
            self.issue(node, key, None, f"must be {_type_name(tp)}, not a list or mapping")
            return None, False
        raw = self.loader.construct_object(node, deep=True)
        return self.scalar(inner, raw, node, key, meta)

    def scalar(self, tp: Any, raw: Any, node: yaml.Node, key: str, meta: Any) -> tuple[Any, bool]:
        if get_origin(tp) is Literal:
            choices = get_args(tp)
            if raw in choices:
                return raw, True
            close = difflib.get_close_matches(str(raw), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.issue(node, key, raw, f"must be {_type_name(tp)}{hint}")
            return None, False
        if tp is bool:
            if isinstance(raw, bool):
                return raw, True
            self.issue(node, key, raw, "must be true or false")
            return None, False
        if tp is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return self.ranged(raw, node, key, meta)
            self.issue(node, key, raw, "must be a whole number")
            return None, False
        if tp is float:
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                return self.ranged(float(raw), node, key, meta)
            self.issue(node, key, raw, "must be a number")
            return None, False
        if tp is str:
            if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
                self.issue(node, key, raw, "must be text (put it in quotes)")
                return None, False
            text = str(raw)
            pattern = meta.get("pattern")
            if pattern and not re.fullmatch(pattern, text):
                self.issue(node, key, text, meta.get("hint") or f"must match {pattern}")
                return None, False
            kind = meta.get("path")
            if kind:
                return self.checked_path(text, node, key, kind, bool(meta.get("secret")))
            return text, True
        raise TypeError(f"unsupported config type {tp!r} for {key}")  # pragma: no cover

    def ranged(self, value: float, node: yaml.Node, key: str, meta: Any) -> tuple[Any, bool]:
        lo, hi = meta.get("minimum"), meta.get("maximum")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            rng = (
                f"between {lo:g} and {hi:g}"
                if lo is not None and hi is not None
                else (f"at least {lo:g}" if lo is not None else f"at most {hi:g}")
            )
            self.issue(node, key, value, f"must be {rng}")
            return None, False
        return value, True

    def checked_path(self, text: str, node: yaml.Node, key: str, kind: str, secret: bool) -> tuple[str | None, bool]:
        path = text if os.path.isabs(text) else os.path.normpath(os.path.join(self.base_dir, text))
        if kind == "file":
            if not os.path.isfile(path):
                self.issue(node, key, text, f"file not found ({path}); check the path or provision it")
                return None, False
            if not os.access(path, os.R_OK):
                self.issue(node, key, text, "file is not readable by this user; fix its owner/mode")
                return None, False
            if secret and os.stat(path).st_mode & 0o077:
                mode = oct(os.stat(path).st_mode & 0o777)
                self.issue(node, key, text, f"holds a secret but is mode {mode}; run chmod 600 on it")
                return None, False
        elif kind == "dir":
            if not os.path.isdir(path):
                self.issue(node, key, text, f"directory not found ({path})")
                return None, False
        elif kind == "parent":
            parent = os.path.dirname(path.rstrip("/")) or "/"
            if not os.path.isdir(parent):
                self.issue(node, key, text, f"its parent directory {parent} does not exist")
                return None, False
        return path, True


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


class _LineLoader(yaml.SafeLoader):
    """SafeLoader; kept as a class so construct_object works on composed nodes."""


def load_section_tree(cls: type, text: str, filename: str) -> Any:
    """Parse YAML text into ``cls``; raise :class:`ConfigError` listing every problem."""
    loader = _LineLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(
                filename, [ConfigIssue(line, "(syntax)", None, f"YAML syntax error: {problem}")]
            ) from None
        base_dir = os.path.dirname(os.path.abspath(filename)) if filename != "<string>" else os.getcwd()
        builder = _Builder(loader, base_dir)
        if node is None:
            node = yaml.MappingNode("tag:yaml.org,2002:map", [])
        obj, _ok = builder.section(cls, node, "")
        if builder.issues or obj is None:
            raise ConfigError(filename, builder.issues or [ConfigIssue(None, "", None, "invalid")])
        return obj
    finally:
        loader.dispose()


def load_section_file(cls: type, path: str | os.PathLike[str], *, missing: str) -> Any:
    """Read ``path`` and build ``cls`` from it (see :func:`load_section_tree`); a file that
    is absent or unreadable is a :class:`ConfigError` too, ``missing`` saying what to do."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(name, [ConfigIssue(None, "(file)", None, f"config file not found; {missing}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, [ConfigIssue(None, "(file)", None, f"cannot read the config file: {exc}")]) from None
    return load_section_tree(cls, text, name)
