"""Strawberry's depth, alias and introspection rules with a code and advice on their
errors (README, 'Limits', "Codes")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError, ValidationContext
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, QueryDepthLimiter

from gql_usage.graphql.errors import INTROSPECTION_DISABLED, QUERY_TOO_DEEP, TOO_MANY_ALIASES
from gql_usage.settings import Settings


class _RecodingContext:
    """A validation context whose reported errors get a code and advice; a rule reports
    once per document (the depth and introspection rules would report every field)."""

    def __init__(self, context: ValidationContext, code: str,
                 advise: Callable[[GraphQLError], str]) -> None:
        self._context = context
        self._code = code
        self._advise = advise
        self._reported = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def report_error(self, error: GraphQLError) -> None:
        if self._reported:
            return
        self._reported = True
        self._context.report_error(GraphQLError(
            self._advise(error), error.nodes, extensions={"code": self._code}))


def coded(rule: type[ASTValidationRule], code: str,
          advise: Callable[[GraphQLError], str]) -> type[ASTValidationRule]:
    """``rule`` whose errors carry ``extensions.code`` and say what to change."""

    class Coded(rule):  # type: ignore[valid-type, misc]
        def __init__(self, context: ValidationContext) -> None:
            try:
                super().__init__(_RecodingContext(context, code, advise))
            except KeyError:  # an unknown fragment: KnownFragmentNamesRule reports it
                ASTValidationRule.__init__(self, context)

    Coded.__name__ = f"Coded{rule.__name__}"
    return Coded


def _rules(extension: AddValidationRules, code: str,
           advise: Callable[[GraphQLError], str]) -> list[type[ASTValidationRule]]:
    return [coded(rule, code, advise) for rule in extension.validation_rules]


def _depth_advice(max_depth: int) -> Callable[[GraphQLError], str]:
    return lambda e: (f"Query too deep: {e.message}. Nest selections at most {max_depth} "
                      "levels below the top-level fields, or split the query.")


def _alias_advice(max_aliases: int) -> Callable[[GraphQLError], str]:
    return lambda e: (f"Too many aliases: {e.message}. Use at most {max_aliases} aliases "
                      "per document; send several operations in one batched request instead.")


def _introspection_advice(e: GraphQLError) -> str:
    return (f"Introspection is disabled on this server ({e.message}). Remove __schema and "
            "__type from the query; the schema is published as schema.graphql.")


def validation_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """The coded depth and alias rules, and the introspection rule when it is off."""
    rules = [
        *_rules(QueryDepthLimiter(max_depth=settings.max_query_depth), QUERY_TOO_DEEP,
                _depth_advice(settings.max_query_depth)),
        *_rules(MaxAliasesLimiter(max_alias_count=settings.max_aliases), TOO_MANY_ALIASES,
                _alias_advice(settings.max_aliases)),
    ]
    if not settings.introspection:
        rules.append(coded(NoSchemaIntrospectionCustomRule, INTROSPECTION_DISABLED,
                           _introspection_advice))
    return rules
