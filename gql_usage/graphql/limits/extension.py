"""The schema extensions that enforce the limits before execution: token count, fragment
expansion, validation rules, cost and the rate limit. See README, 'Limits'."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError, get_operation_ast
from graphql.error import GraphQLSyntaxError
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, SchemaExtension

from gql_usage.graphql.errors import QUERY_TOO_COSTLY, RATE_LIMITED, TOO_MANY_TOKENS
from gql_usage.graphql.limits.assessments import assess_operation
from gql_usage.graphql.limits.expansion import (
    MAX_EXPANDED_FIELDS,
    expanded_fields,
    uses_sized_lists,
)
from gql_usage.graphql.limits.rate_limit import (
    REFUSAL_POINTS,
    Charge,
    RateLimiter,
    rate_limit_headers,
    viewer_key,
)
from gql_usage.graphql.limits.rules import validation_rules
from gql_usage.settings import Settings
from gql_usage.storage.catalogue import list_sizes


class QueryCost(SchemaExtension):
    """Computes the cost after validation, refuses costly or over-budget operations before
    execution, charges the viewer's budget and sets the rate-limit headers."""

    def __init__(self, *, max_cost: int, limiter: RateLimiter, max_tokens: int) -> None:
        self.max_cost = max_cost
        self.limiter = limiter
        self.max_tokens = max_tokens
        self.rate_limited = False

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError) and "tokens. Parsing aborted" in \
                    error.message:
                error.message = (f"Query too long: the document has more than "
                                 f"{self.max_tokens:,} tokens. Shorten it (use variables "
                                 "and fragments instead of repeated selections) or split it.")
                error.extensions = {"code": TOO_MANY_TOKENS}

    def on_validate(self) -> Iterator[None]:
        ctx = self.execution_context
        document = ctx.graphql_document
        if document is not None and expanded_fields(document) > MAX_EXPANDED_FIELDS:
            # Set before validation runs, so validation (and its limit rules) is skipped.
            ctx.pre_execution_errors = [GraphQLError(
                f"Query too costly: through its fragment spreads the document expands to "
                f"more than {MAX_EXPANDED_FIELDS:,} field selections. Spread each fragment "
                "fewer times, or split the query.", extensions={"code": QUERY_TOO_COSTLY})]
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        refusal = await self._check()
        if refusal is not None:
            self.execution_context.result = GraphQLExecutionResult(data=None, errors=[refusal])
        yield

    async def on_operation(self) -> AsyncIterator[None]:
        yield
        context = self.execution_context.context
        response = getattr(context, "response", None)
        viewer = getattr(context, "viewer", None)
        if response is None or viewer is None:
            return
        # The budget now, not this operation's: in a batch the last to finish sets them.
        budget = await self.limiter.peek(viewer_key(viewer))
        for name, value in rate_limit_headers(budget, context.query_cost).items():
            response.headers[name] = value
        if self.rate_limited:
            response.status_code = 429
            response.headers["Retry-After"] = str(
                max(1, math.ceil(budget.reset_at - self.limiter.clock())))

    async def _check(self) -> GraphQLError | None:
        ctx = self.execution_context
        context = ctx.context
        viewer = getattr(context, "viewer", None)
        if viewer is None or ctx.graphql_document is None:
            return None
        operation = get_operation_ast(ctx.graphql_document, ctx.operation_name)
        if operation is None:
            return None
        assessment = assess_operation(
            ctx.schema._schema, ctx.graphql_document, operation, ctx.variables,
            viewer.account.time_zone, self.max_cost, ctx.query, ctx.operation_name)
        if assessment is None:
            return None
        # Priced at 100 per list, the cost is a lower bound: refused as it is, or priced
        # again with the account's real list sizes.
        if (assessment.refusal is None and not assessment.too_costly
                and uses_sized_lists(ctx.graphql_document)
                and assessment.cost <= (await self.limiter.peek(viewer_key(viewer))).remaining):
            sizes = await list_sizes(viewer.account.id)
            assessment = assess_operation(
                ctx.schema._schema, ctx.graphql_document, operation, ctx.variables,
                viewer.account.time_zone, self.max_cost, ctx.query, ctx.operation_name,
                sizes) or assessment
        refusal: GraphQLError | None = None
        if assessment.refusal is not None:
            refusal = assessment.refusal.error()
        elif assessment.too_costly:
            refusal = GraphQLError(
                f"Query too costly: it costs at least {assessment.cost:,} points, the "
                f"maximum is {self.max_cost:,} per operation. Ask for fewer items (a "
                "`limit` on `breakdown`, a shorter range or a coarser granularity for "
                "`series`, fewer aliased copies) or split the query.",
                extensions={"code": QUERY_TOO_COSTLY, "cost": assessment.cost,
                            "maxCost": self.max_cost})
        # A refused operation is charged a fixed fee, an accepted one its cost.
        cost = assessment.cost if refusal is None else REFUSAL_POINTS
        context.query_cost += cost
        charged, budget = await self.limiter.charge(viewer_key(viewer), cost)
        if not charged:
            self.rate_limited = True
            reset = budget.reset_datetime().isoformat(timespec="seconds").replace(
                "+00:00", "Z")
            wait = max(1, math.ceil(budget.reset_at - self.limiter.clock()))
            if refusal is not None:
                why = (f"this operation is refused ({refusal.message}), and a refused "
                       f"operation costs {cost:,} points; {budget.remaining:,} of "
                       f"{budget.limit:,} points per minute remain")
            elif cost <= budget.limit:
                why = (f"this query costs {cost:,} points and {budget.remaining:,} of "
                       f"{budget.limit:,} points per minute remain")
            else:
                why = (f"this query costs {cost:,} points, more than the whole budget of "
                       f"{budget.limit:,} points per minute; make it cheaper")
            return GraphQLError(
                f"Rate limit exceeded: {why}. The budget resets at {reset} (in {wait} s); "
                "retry then, or send cheaper queries.",
                extensions={"code": RATE_LIMITED, "cost": cost, "limit": budget.limit,
                            "remaining": budget.remaining,
                            "resetAt": budget.reset_datetime().isoformat()})
        if refusal is not None:
            return refusal
        context.charges[id(operation)] = Charge(cost, budget)
        return None


def limit_extensions(settings: Settings, limiter: RateLimiter) -> list[Any]:
    """The schema extensions enforcing ``settings``' limits, in the order they run."""
    rules = validation_rules(settings)
    max_tokens = settings.max_tokens
    max_cost = settings.max_query_cost
    return [
        lambda: AddValidationRules(rules),
        lambda: MaxTokensLimiter(max_token_count=max_tokens),
        lambda: QueryCost(max_cost=max_cost, limiter=limiter, max_tokens=max_tokens),
    ]
