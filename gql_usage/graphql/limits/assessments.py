"""Cost assessments cached by digests of the document text, operation name and
variables (README, 'Limits', "Caches")."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from graphql import DocumentNode, GraphQLSchema, OperationDefinitionNode

from gql_usage.caches import MIB, ByteLRU, digest, text_digest
from gql_usage.graphql.limits.cost import Assessment, CostCalculator
from gql_usage.storage.catalogue import ListSizes


def _assessment_bytes(assessment: Assessment | None) -> int:
    refusal = assessment.refusal if assessment is not None else None
    if refusal is None:
        return 0
    return sum(sys.getsizeof(text) for text in (refusal.argument, refusal.detail,
                                                *refusal.path)) + 64 * len(refusal.path)


#: Assessments by (schema, maximum, time zone, digests of the document text, the operation
#: name and the variables): a dashboard sends the same ones again and again.
_ASSESSMENTS: ByteLRU[tuple[object, ...], Assessment | None] = ByteLRU(
    "query costs", 4 * MIB, _assessment_bytes)


def assess_operation(schema: GraphQLSchema, document: DocumentNode,
                     operation: OperationDefinitionNode, raw_variables: dict[str, Any] | None,
                     default_time_zone: str, max_cost: int, query: str | None = None,
                     operation_name: str | None = None,
                     sizes: ListSizes | None = None) -> Assessment | None:
    """``CostCalculator.assess``, cached when the document's text ``query`` is known: the
    result is a function of the text, the operation name, the variables, the time zone,
    the maximum and the account's list sizes alone. Keyed by digests, so no client text is kept."""
    try:
        variables = orjson.dumps(raw_variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON (never from HTTP): not cached
        query = None
    if query is None:
        return CostCalculator.assess(schema, document, operation, raw_variables,
                                     default_time_zone, max_cost, sizes)
    key = (schema, max_cost, default_time_zone, text_digest(query),
           digest(operation_name or ""), digest(variables), sizes)
    found = _ASSESSMENTS.get(key)
    if found is None:
        found = CostCalculator.assess(schema, document, operation, raw_variables,
                                      default_time_zone, max_cost, sizes)
        _ASSESSMENTS.put(key, found)
    return found


