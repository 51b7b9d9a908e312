"""A change's notice rendered once per shape; per customer, only their name goes in.

A policy change tells thousands of customers the same words but for the name in the
greeting, and Jinja2 spent ~50-80 µs a notice rendering the three templates again.
When the only use a template trio makes of ``name`` is ``{{ name }}`` as it is in its
bodies, and none in its subject (read off the syntax trees, with what they extend),
it is rendered once per context without the name (its *shape*), with ``MARK`` in the
name's place, and cut at each mark. A customer's text is then the pieces joined by
their name, and their HTML the pieces joined by their name escaped, as autoescape
would have. Anything else renders in full: a name filtered, tested or set, or inside
a filter, ``set``, macro, ``call`` or ``autoescape`` block; a block rendered again
(``self``, ``super``, ``caller``); an include or import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment, nodes
from markupsafe import escape

MARK = "\x00preaviso:name\x00"
"""Stands for the name while a shape is rendered. No value can hold it: single lines
refuse control characters and free texts lose them (``notice._clean_text``), and a
context where one does anyway is rendered in full."""
SLOT = "name"
SHAPES_MAX = 512
"""Shapes kept at most (a change has one per language and reason)."""


def name_uses(env: Environment, template: str) -> list[bool] | None:
    """Each use of ``name`` in ``template`` and what it extends: True where it is output
    as it is (``{{ name }}``). None if that cannot be told (an include, an import)."""
    source, _, _ = env.loader.get_source(env, template) if env.loader else ("", None, None)
    tree = env.parse(source)
    if any(tree.find_all((nodes.Include, nodes.Import, nodes.FromImport))):
        return None
    uses = list(_name_uses(tree, ()))
    for extends in tree.find_all(nodes.Extends):
        parent = extends.template
        found = name_uses(env, parent.value) if isinstance(parent, nodes.Const) else None
        if found is None:
            return None
        uses += found
    return uses


def shapeable(env: Environment, subject: str, text: str, html: str) -> bool:
    """A trio can be rendered by shape if its bodies output ``name`` only as it is and
    its subject does not use it (a subject is reflowed onto one line)."""
    bodies = [name_uses(env, text), name_uses(env, html)]
    return name_uses(env, subject) == [] and all(u is not None and all(u) for u in bodies)


_PLAIN = (nodes.Template, nodes.Block, nodes.If, nodes.For, nodes.Scope, nodes.With)
"""What may enclose an ``Output`` of the name: statements that choose whether and how
often it is output, never what is done to it. A filter block, a ``set`` block, a macro
or ``call`` block, an ``autoescape`` block would change its text or where it goes."""
_RENDERS_AGAIN = frozenset({"self", "super", "caller"})
"""Names that render a block or a body again as a value (``self.why()|length``)."""


def _name_uses(node: nodes.Node, path: tuple[nodes.Node, ...]) -> Iterator[bool]:
    """For each ``name`` in the tree (and each name that renders a block again): whether
    it is output as it is, directly, inside nothing but plain statements."""
    if isinstance(node, nodes.Name) and node.name in _RENDERS_AGAIN:
        yield False
    if isinstance(node, nodes.Name) and node.name == SLOT:
        *outer, parent = path
        yield (
            isinstance(parent, nodes.Output)
            and node.ctx == "load"
            and all(isinstance(n, _PLAIN) for n in outer)
        )
    for child in node.iter_child_nodes():
        yield from _name_uses(child, (*path, node))


@dataclass(frozen=True, slots=True)
class Shape:
    """A trio rendered without the name: the subject, and the bodies cut at the name."""

    subject: str
    text: tuple[str, ...]
    html: tuple[str, ...]

    def fill(self, name: str) -> tuple[str, str, str]:
        return self.subject, name.join(self.text), str(escape(name)).join(self.html)


Render = Callable[[dict[str, Any]], tuple[str, str, str]]
"""The full rendering of a context: subject, text, HTML."""


class Shapes:
    """The shapes of one template trio's renderings, by context (without the name)."""

    def __init__(self, render: Render) -> None:
        self._render = render
        self._shapes: dict[tuple[Any, ...], Shape | None] = {}

    def render(self, context: Mapping[str, Any]) -> tuple[str, str, str]:
        try:
            key = _key(context)
            hash(key)
        except TypeError:  # a value that cannot be a key (unhashable): no shape for it
            return self._render(dict(context))
        if key not in self._shapes:
            if len(self._shapes) >= SHAPES_MAX:
                self._shapes.clear()
            self._shapes[key] = self._shape(context)
        shape = self._shapes[key]
        if shape is None:  # a value holds the mark: this context renders in full
            return self._render(dict(context))
        return shape.fill(context[SLOT])

    def _shape(self, context: Mapping[str, Any]) -> Shape | None:
        if any(MARK in v for v in _strings(context)):
            return None
        subject, text, html = self._render({**context, SLOT: MARK})
        return Shape(subject, tuple(text.split(MARK)), tuple(html.split(MARK)))


def _key(context: Mapping[str, Any]) -> tuple[Any, ...]:
    """The context without the name; each value with its type (``True``, ``1`` and ``1.0``
    are equal keys but not the same text)."""
    return tuple(
        sorted(
            (k, type(v), tuple(v) if isinstance(v, list) else v)
            for k, v in context.items()
            if k != SLOT
        )
    )


def _strings(value: Any) -> Iterator[str]:
    """Every string in a context but the name, however deep."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k != SLOT:
                yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
