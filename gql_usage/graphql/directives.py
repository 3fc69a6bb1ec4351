"""``@adminOnly``, ``@paidPlan`` and ``@adminOrSelf``: schema directives that are also
the checks.

``guarded(...)`` on a field, or ``@guarded_type(...)`` on a type, both prints the directives
in the SDL and enforces them (a ``PermissionExtension``), so a field cannot have one
without the other. See README, 'Architecture' (Access).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location

from gql_usage.graphql.errors import FORBIDDEN, PLAN_UPGRADE_REQUIRED
from gql_usage.storage.models import Plan, Role


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="adminOnly",
                             description="Only admins of the account may read this field.")
class AdminOnlyDirective:
    pass


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="paidPlan",
                             description="Only accounts on a paid plan may read this field.")
class PaidPlanDirective:
    pass


@strawberry.schema_directive(locations=[Location.FIELD_DEFINITION], name="adminOrSelf",
                             description="Only admins of the account and the user themself "
                             "may read this field.")
class AdminOrSelfDirective:
    pass


class Rule(BasePermission):
    """An access rule; ``precedence`` orders the checks (lowest first)."""

    precedence: ClassVar[int]


class AdminOnly(Rule):
    message = "Only admins of this account can see its usage; ask an admin of your account."
    error_extensions = {"code": FORBIDDEN}
    _schema_directive = AdminOnlyDirective()
    precedence = 0  # first: a Free-plan member is told FORBIDDEN (only an admin can upgrade)

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return info.context.viewer.user.role == Role.ADMIN


class PaidPlan(Rule):
    message = ("Usage analytics need a paid plan (PRO, PREMIUM or SCALE); "
               "this account is on FREE.")
    error_extensions = {"code": PLAN_UPGRADE_REQUIRED}
    _schema_directive = PaidPlanDirective()
    precedence = 1

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return info.context.viewer.account.plan != Plan.FREE


class AdminOrSelf(Rule):
    """A field of a ``User`` that only admins and that user may read (``source`` is the
    ``User`` object, whose private ``_pk`` is the user's database id)."""

    message = ("Only admins of this account and the user themself can read this; "
               "ask an admin of your account.")
    error_extensions = {"code": FORBIDDEN}
    _schema_directive = AdminOrSelfDirective()
    precedence = 0

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        user = info.context.viewer.user
        return user.role == Role.ADMIN or getattr(source, "_pk", None) == user.id


ADMIN_ONLY = AdminOnly
PAID_PLAN = PaidPlan
ADMIN_OR_SELF = AdminOrSelf
#: Directive name printed in the SDL -> the permission that enforces it.
RULES: dict[str, type[Rule]] = {"adminOnly": AdminOnly, "paidPlan": PaidPlan,
                                "adminOrSelf": AdminOrSelf}
#: Rules that depend on the viewer only, the ones a whole type may be guarded by.
ViewerRule = type[AdminOnly] | type[PaidPlan]


def ordered(rules: Iterable[type[Rule]]) -> tuple[type[Rule], ...]:
    return tuple(sorted(set(rules), key=lambda r: r.precedence))


def guarded(*rules: type[Rule]) -> PermissionExtension:
    """The field extension for a guarded field: directives printed and enforced."""
    return PermissionExtension([rule() for rule in ordered(rules)], use_directives=True)


_T = TypeVar("_T", bound=type)
_TYPE_RULES = "__gql_usage_type_rules__"


def guarded_type(*rules: ViewerRule) -> Callable[[_T], _T]:
    """Class decorator: objects of this type may be read only under ``rules``, wherever
    they are reached. Put it above ``@strawberry.type``."""
    if not rules:
        raise ValueError("guarded_type needs at least one rule")

    def mark(cls: _T) -> _T:
        setattr(cls, _TYPE_RULES, ordered(rules))
        return cls
    return mark


def type_rules(cls: object) -> tuple[type[Rule], ...]:
    """The rules ``@guarded_type`` declared on ``cls`` (or a base class); () if none."""
    rules: tuple[type[Rule], ...] = getattr(cls, _TYPE_RULES, ())
    return rules


def enforce(rules: Iterable[type[Rule]], info: Any) -> None:
    """Raise the first refused rule's coded error (``info`` needs only ``.context``)."""
    for rule in rules:
        permission = rule()
        if not permission.has_permission(None, info):
            permission.on_unauthorized()
