"""What each administrator's role may do in the van UI; checked on the server for every action.

* ``van_admin`` runs the van's day: queue, applicants, applications, receipts.
* ``case_admin`` visits people at home: the assigned visits come first; they
  take applications too.
* ``supervisor`` does everything above, sees the whole day's work (the report
  page) and manages the administrators' accounts (keyslots of the store).

An account with a role this version does not know gets the van
administrator's rights, never more.
"""

from __future__ import annotations

from kit.sessions import Session

from .errors import Forbidden

VAN_ADMIN, CASE_ADMIN, SUPERVISOR = "van_admin", "case_admin", "supervisor"
ROLES = (VAN_ADMIN, CASE_ADMIN, SUPERVISOR)

_BASE = frozenset({"queue", "intake", "applicants", "visits", "trips"})
PERMISSIONS: dict[str, frozenset[str]] = {
    VAN_ADMIN: _BASE,
    CASE_ADMIN: _BASE,
    SUPERVISOR: _BASE | {"report", "manage_admins"},
}


def allowed(role: str | None, permission: str) -> bool:
    return permission in PERMISSIONS.get(role or "", PERMISSIONS[VAN_ADMIN])


def require(session: Session, permission: str) -> None:
    if not allowed(session.role, permission):
        raise Forbidden("Ваша роль не дає доступу до цієї дії")


def home(role: str | None) -> str:
    """Where an administrator lands after logging in."""
    return "/visits" if role == CASE_ADMIN else "/"
