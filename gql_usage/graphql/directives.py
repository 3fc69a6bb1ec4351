"""``@adminOnly`` and ``@paidPlan``: schema directives that are also the checks.

A guarded field is declared with ``guarded(ADMIN_ONLY, PAID_PLAN)``: one declaration
both prints the directives in the SDL and enforces them at execution time (a Strawberry
``PermissionExtension`` whose permissions carry the directives), so a field cannot have
one without the other. Rules are checked in a fixed order, ``@adminOnly`` first: a member
of a Free-plan account is told ``FORBIDDEN`` (their admin can upgrade; they cannot).
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location

from gql_usage.graphql.errors import FORBIDDEN, PLAN_UPGRADE_REQUIRED
from gql_usage.models import Plan, Role


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="adminOnly",
                             description="Only admins of the account may read this field.")
class AdminOnlyDirective:
    pass


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="paidPlan",
                             description="Only accounts on a paid plan may read this field.")
class PaidPlanDirective:
    pass


class AdminOnly(BasePermission):
    message = "Only admins of this account can see its usage; ask an admin of your account."
    error_extensions = {"code": FORBIDDEN}
    _schema_directive = AdminOnlyDirective()
    precedence = 0

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return info.context.viewer.user.role == Role.ADMIN


class PaidPlan(BasePermission):
    message = ("Usage analytics need a paid plan (PRO, PREMIUM or SCALE); "
               "this account is on FREE.")
    error_extensions = {"code": PLAN_UPGRADE_REQUIRED}
    _schema_directive = PaidPlanDirective()
    precedence = 1

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return info.context.viewer.account.plan != Plan.FREE


ADMIN_ONLY = AdminOnly
PAID_PLAN = PaidPlan
#: Directive name printed in the SDL -> the permission that enforces it.
RULES: dict[str, type[BasePermission]] = {"adminOnly": AdminOnly, "paidPlan": PaidPlan}


def guarded(*rules: type[AdminOnly] | type[PaidPlan]) -> PermissionExtension:
    """The field extension for a guarded field: directives printed and enforced."""
    ordered = sorted(set(rules), key=lambda r: r.precedence)
    return PermissionExtension([rule() for rule in ordered], use_directives=True)
