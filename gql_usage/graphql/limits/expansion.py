"""Walks of a parsed document before validation: how far its fragment spreads expand, and
whether it names a list priced by the account's size."""

from __future__ import annotations

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from gql_usage.graphql.limits.cost import SIZED_LISTS

#: Most field selections a document may expand to through its fragment spreads (checked
#: before validation: Strawberry's depth and alias rules walk every expanded path).
MAX_EXPANDED_FIELDS = 10_000
#: Names of the fields in ``SIZED_LISTS`` (a document is walked without types).
_SIZED_NAMES = frozenset(name for _, name in SIZED_LISTS)


def uses_sized_lists(document: DocumentNode) -> bool:
    """Whether a field of ``document`` (any operation or fragment) has the name of a list
    priced by the account's size (``SIZED_LISTS``): then the sizes are counted."""
    def walk(selection_set: SelectionSetNode | None) -> bool:
        if selection_set is None:
            return False
        for node in selection_set.selections:
            if isinstance(node, FieldNode) and node.name.value in _SIZED_NAMES:
                return True
            if isinstance(node, FieldNode | InlineFragmentNode) and walk(node.selection_set):
                return True
        return False

    return any(walk(getattr(d, "selection_set", None)) for d in document.definitions)


def expanded_fields(document: DocumentNode, cap: int = MAX_EXPANDED_FIELDS) -> int:
    """Field selections of the largest operation with every fragment spread expanded,
    counted with one pass per fragment (memoised), stopping once past ``cap``."""
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    memo: dict[str, int] = {}

    def size(selection_set: SelectionSetNode, stack: frozenset[str]) -> int:
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += 1 + (size(node.selection_set, stack) if node.selection_set else 0)
            elif isinstance(node, InlineFragmentNode):
                total += size(node.selection_set, stack)
            elif isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name in stack or name not in fragments:  # a cycle or unknown: invalid
                    continue
                if name not in memo:
                    memo[name] = size(fragments[name].selection_set, stack | {name})
                total += memo[name]
            if total > cap:
                break
        return total

    try:
        return max((size(d.selection_set, frozenset()) for d in document.definitions
                    if isinstance(d, OperationDefinitionNode)), default=0)
    except RecursionError:
        return cap + 1


