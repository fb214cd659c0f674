"""Reading Bicep without a Bicep compiler: the syntax tree tree-sitter-bicep gives, and what a test can know from it
without deploying (declarations, literal values, the keys an object expression can have, the strings an expression
can be)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

_PARSER = Parser(Language(tree_sitter_bicep.language()))
_ESCAPES = {"\\'": "'", "\\\\": "\\", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


class NotLiteral(ValueError):
    """The expression's value is known only at deployment (a reference, a function call, an interpolation)."""


def text(node: Node) -> str:
    return (node.text or b"").decode()


def named(node: Node) -> list[Node]:
    """Named children, comments left out."""
    return [child for child in node.named_children if child.type != "comment"]


def syntax_errors(node: Node) -> Iterator[str]:
    if node.type == "ERROR" or node.is_missing:
        line, column = node.start_point
        yield f"line {line + 1}, column {column + 1}: {'missing' if node.is_missing else 'unexpected'} {text(node)!r}"
    for child in node.children:
        yield from syntax_errors(child)


def key_of(node: Node) -> str:
    return literal(node) if node.type == "string" else text(node)


def properties(node: Node) -> dict[str, Node]:
    """The properties of an object literal, by key."""
    if node.type != "object":
        raise NotLiteral(f"not an object: {text(node)[:80]}")
    pairs = [named(prop) for prop in named(node) if prop.type == "object_property"]
    return {key_of(pair[0]): pair[1] for pair in pairs}


def prop(node: Node, *path: str) -> Node:
    for key in path:
        node = properties(node)[key]
    return node


def _branch(ternary: Node, name: str) -> Node:
    branch = ternary.child_by_field_name(name)
    assert branch is not None, text(ternary)
    return branch


def literal(node: Node) -> Any:
    """The value of an expression made of literals only."""
    match node.type:
        case "string":
            parts = []
            for part in named(node):
                if part.type == "interpolation":
                    raise NotLiteral(f"interpolated string: {text(node)}")
                parts.append(_ESCAPES[text(part)] if part.type == "escape_sequence" else text(part))
            return "".join(parts)
        case "number":
            return int(text(node))
        case "boolean":
            return text(node) == "true"
        case "null":
            return None
        case "array":
            return [literal(item) for item in named(node)]
        case "object":
            return {key: literal(value) for key, value in properties(node).items()}
        case "parenthesized_expression":
            return literal(named(node)[0])
        case _:
            raise NotLiteral(f"{node.type}: {text(node)[:80]}")


@dataclass(frozen=True)
class Declared:
    """A resource or module: its symbol, what it declares (resource type or module path) and its body object."""

    symbol: str
    target: str
    body: Node
    conditional: bool
    existing: bool

    @property
    def type(self) -> str:
        return self.target.split("@")[0]


class BicepFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = _PARSER.parse(path.read_bytes()).root_node
        self.errors = list(syntax_errors(self.root))
        self.params: dict[str, Node | None] = {}
        self.variables: dict[str, Node] = {}
        self.outputs: dict[str, Node] = {}
        self.resources: dict[str, Declared] = {}
        self.modules: dict[str, Declared] = {}
        for declaration in named(self.root):
            self._declare(declaration)

    def _declare(self, node: Node) -> None:
        parts = named(node)
        match node.type:
            case "parameter_declaration":
                self.params[text(parts[0])] = parts[2] if len(parts) > 2 else None
            case "variable_declaration":
                self.variables[text(parts[0])] = parts[-1]
            case "output_declaration":
                self.outputs[text(parts[0])] = parts[-1]
            case "resource_declaration" | "module_declaration":
                body = parts[-1]
                conditional = body.type == "if_statement"
                if body.type in ("if_statement", "for_statement"):
                    body = [part for part in named(body) if part.type == "object"][-1]
                declared = Declared(
                    symbol=text(parts[0]),
                    target=literal(parts[1]),
                    body=body,
                    conditional=conditional,
                    existing=any(child.type == "existing" for child in node.children),
                )
                (self.resources if node.type == "resource_declaration" else self.modules)[declared.symbol] = declared

    def of_type(self, resource_type: str) -> list[Declared]:
        return [r for r in self.resources.values() if r.type == resource_type and not r.existing]

    def resolve(self, node: Node) -> Node:
        """Follow parentheses and references to variables down to the expression they stand for."""
        while True:
            if node.type == "parenthesized_expression":
                node = named(node)[0]
            elif node.type == "identifier" and text(node) in self.variables:
                node = self.variables[text(node)]
            else:
                return node

    def object_keys(self, node: Node) -> dict[str, Node]:
        """Every key an object expression can have: through variables, union() and both branches of a condition."""
        node = self.resolve(node)
        if node.type == "object":
            return properties(node)
        if node.type == "ternary_expression":
            return self.object_keys(_branch(node, "consequence")) | self.object_keys(_branch(node, "alternative"))
        if node.type == "call_expression" and text(named(node)[0]) == "union":
            keys: dict[str, Node] = {}
            for argument in named(named(node)[1]):
                keys |= self.object_keys(argument)
            return keys
        raise NotLiteral(f"cannot tell the keys of {text(node)[:80]}")

    def strings(self, node: Node) -> set[str]:
        """Every literal string an expression can be: through variables, members of variable objects, arrays,
        concat() and both branches of a condition."""
        node = self.resolve(node)
        match node.type:
            case "string":
                return {literal(node)}
            case "array":
                return set().union(*(self.strings(item) for item in named(node)))
            case "ternary_expression":
                return self.strings(_branch(node, "consequence")) | self.strings(_branch(node, "alternative"))
            case "call_expression" if text(named(node)[0]) == "concat":
                return set().union(*(self.strings(argument) for argument in named(named(node)[1])))
            case "member_expression":
                owner, member = named(node)
                return self.strings(self.object_keys(owner)[text(member)])
        raise NotLiteral(f"not a literal string: {text(node)[:80]}")
