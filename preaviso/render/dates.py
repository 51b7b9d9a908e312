"""The one date formatter of the notices: a date as the customer's language writes it."""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from babel import Locale as BabelLocale
from babel.dates import format_date

from preaviso.schemas.events import Locale


@lru_cache(maxsize=8)
def _babel_locale(locale: Locale) -> BabelLocale:
    return BabelLocale.parse(locale.value)


@lru_cache(maxsize=4096)
def long_date(day: date, locale: Locale) -> str:
    """A date as 1 de marzo de 2027 or March 1, 2027; cached, as one event repeats few
    dates (babel takes 3-7 µs a date)."""
    return format_date(day, format="long", locale=_babel_locale(locale))
