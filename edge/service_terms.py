"""A service's term and fee as a receipt says them, in the page's language (issue 18 item 5)."""

from __future__ import annotations

from .catalog import Service
from .i18n import translate


def _uk_days(n: int, kind: str) -> str:
    # Ukrainian plural: 1, 21 ... день; 2–4, 22–24 ... дні; otherwise днів (11–14 too)
    form = 0 if n % 10 == 1 and n % 100 != 11 else 1 if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14 else 2
    adj = {"working": ("робочий", "робочі", "робочих"), "calendar": ("календарний", "календарні", "календарних")}[kind][form]
    return f"{n} {adj} {('день', 'дні', 'днів')[form]}"


def term_text(service: Service | None, lang: str) -> str:
    if service is None or service.term_days is None:
        return translate("term.not_stated", lang)
    if service.term_days == 0:
        return translate("term.same_day", lang)
    kind = service.term_kind if service.term_kind in ("working", "calendar") else "working"
    if lang == "en":
        days = f"{service.term_days} {kind} day{'s' if service.term_days != 1 else ''}"
    else:
        days = _uk_days(service.term_days, kind)
    return f"{'до' if lang != 'en' else 'up to'} {days}; {translate('term.notify', lang)}"


def fee_text(service: Service | None, lang: str) -> str:
    if service is None or service.free is None:
        return translate("fee.not_stated", lang)
    if service.fee is None:
        return translate("fee.free", lang)
    return translate("fee.paid", lang).replace("{amount}", service.fee.amount)
