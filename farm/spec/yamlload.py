"""YAML in, plain data out — with the line of every key and item, and hard limits.

PyYAML's ``safe_load`` throws away where things were, and happily builds a
"billion laughs" document whose aliases expand exponentially the moment anyone
walks it (pydantic would). So this module composes the node tree itself (PyYAML's
composer over libyaml's scanner and parser, five times faster than PyYAML's own:
5,000 boards load in about a second) and then builds the data by walking the nodes:

- every mapping key and sequence item records its 1-based line under its path,
  e.g. ``("boards", 0, "processors")``, so a validation error can name a line;
- every node visited while building counts, aliases included each time they are
  expanded, and the walk stops once aliases have grown the document past
  ``EXPANSION`` times its own size (plus ``EXPANSION_SLACK``): an alias bomb is
  refused in milliseconds instead of eating the machine, while a large document
  (thousands of boards, each merging a few defaults) passes;
- documents over ``MAX_BYTES`` and nesting deeper than ``MAX_DEPTH`` are refused
  before the (recursive) composer can hit Python's recursion limit;
- duplicate keys, non-string keys and unusual tags (sets, ordered maps) are
  refused: PyYAML silently keeps the last duplicate, which hides mistakes;
- merge keys (``<<: *defaults``) work, and their expansion counts too.

Failures raise :class:`farm.errors.SpecError` with the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from farm.errors import SpecError

try:
    from yaml.cyaml import CParser as _Events  # libyaml: PyYAML's wheels carry it
except ImportError:  # a PyYAML built without it: the same events, in Python

    class _Events(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, text: str):
            yaml.reader.Reader.__init__(self, text)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


MAX_BYTES = 8 * 1024 * 1024
"""Largest document accepted. An inventory of 5,000 ordinary boards is ~1.2 MiB."""

MAX_NODES = 1_000_000
"""Most nodes a document may hold as written (5,000 ordinary boards are ~200,000)."""

EXPANSION = 10
EXPANSION_SLACK = 10_000
"""Aliases may grow a document of N nodes to ``EXPANSION * N + EXPANSION_SLACK`` nodes."""

MAX_DEPTH = 64
"""Deepest nesting accepted; real specs nest five levels at most."""

KeyPath = tuple[str | int, ...]
"""Where a value sits in the document: keys and list indices from the top."""

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _TooBig(Exception):
    """Raised inside the composer; turned into a SpecError with its line."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedLoader(Composer, _Events, SafeConstructor, Resolver):
    """A safe loader whose composer refuses documents that nest too deep or grow too big."""

    def __init__(self, text: str):
        _Events.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._composed += 1
        if self._depth > MAX_DEPTH or self._composed > MAX_NODES:
            mark = self.peek_event().start_mark
            what = (
                f"nested deeper than {MAX_DEPTH}" if self._depth > MAX_DEPTH else "too many nodes"
            )
            raise _TooBig(mark.line + 1, f"document refused: {what}")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass
class Document:
    """A parsed document: its data and the line of everything in it."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor the document has."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def error(self, path: KeyPath, message: str) -> SpecError:
        """A SpecError for ``path`` (``None`` field when ``path`` is the top)."""
        return SpecError(self.file, self.line_of(path), format_path(path) or None, message)


def format_path(path: KeyPath) -> str:
    """``("boards", 0, "name")`` → ``boards[0].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_yaml(text: str | bytes, file: str = "<string>") -> Document:
    """Parse one YAML document from ``text``; every failure is a SpecError naming ``file``."""
    if len(text) > MAX_BYTES or (
        isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES
    ):
        raise SpecError(file, None, None, f"document is larger than {MAX_BYTES} bytes: refused")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(file, None, None, f"not UTF-8 text: {e.reason}") from e
    try:
        loader = _BoundedLoader(text)
    except yaml.YAMLError as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(file, None, None, f"invalid YAML: {first_line}") from e
    try:
        node = loader.get_single_node()
    except _TooBig as e:
        raise SpecError(file, e.line, None, e.message) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(file, line, None, f"invalid YAML: {e.problem or e.context}") from e
    except (yaml.YAMLError, RecursionError) as e:
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(file, None, None, f"invalid YAML: {first_line}") from e
    finally:
        loader.dispose()
    if node is None:
        raise SpecError(file, None, None, "document is empty")
    doc = Document(file, None)
    builder = _Builder(loader, doc, EXPANSION * loader._composed + EXPANSION_SLACK)
    doc.data = builder.build(node, ())
    return doc


class _Builder:
    """Builds plain data from composed nodes, recording lines and counting expansions."""

    def __init__(self, loader: _BoundedLoader, doc: Document, budget: int):
        self.loader = loader
        self.doc = doc
        self.budget = budget  # nodes the walk may visit, aliases counted at every use
        self.visited = 0
        self.depth = 0

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.visited += 1
        self.depth += 1
        line = node.start_mark.line + 1
        if self.visited > self.budget or self.depth > MAX_DEPTH:
            raise SpecError(
                self.doc.file,
                line,
                None,
                f"document refused: its aliases expand it to more than {self.budget} nodes"
                if self.visited > self.budget
                else f"document refused: nested deeper than {MAX_DEPTH}",
            )
        self.doc.lines.setdefault(path, line)
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise self.doc.error(path, f"unsupported YAML tag {node.tag}")
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self.depth -= 1

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            raise self.doc.error(path, f"unsupported YAML tag {node.tag}")
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:  # merges first: explicit keys' lines win
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node, path))
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise SpecError(
                    self.doc.file, line, format_path(path) or None, "keys must be strings"
                )
            child = (*path, key)
            if key in out:
                first = self.doc.lines.get(child)
                raise SpecError(
                    self.doc.file,
                    line,
                    format_path(child),
                    f"duplicate key (first on line {first})",
                )
            self.doc.lines[child] = line
            out[key] = self.build(value_node, child)
        for source in merged:  # explicit keys win; earlier merge sources win over later ones
            for key, value in source.items():
                out.setdefault(key, value)
        return out

    def _merge_sources(self, node: yaml.Node, path: KeyPath) -> list[dict[str, Any]]:
        """The mappings of a ``<<:`` merge key (one mapping or a list of them).

        Done here rather than by PyYAML's ``flatten_mapping``, which copies pairs
        before anything can count them: ``<<: [*a, *a]`` nested thirty deep would
        allocate a billion pairs.
        """
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        sources = []
        for source in nodes:
            if not isinstance(source, yaml.MappingNode):
                raise self.doc.error(path, "a merge key (<<) takes a mapping or a list of mappings")
            sources.append(self.build(source, path))
        return sources

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as e:
            raise self.doc.error(path, f"invalid YAML: {e.problem}") from e
        except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp out of range
            raise self.doc.error(path, f"invalid value {node.value!r}: {e}") from e
