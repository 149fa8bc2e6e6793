"""Phone numbers as carriers and people write them, turned into E.164.

Carriers hand us caller IDs in many shapes (`+14155550123`, `14155550123`,
`(415) 555-0123`, `tel:+1-415-555-0123`, `sip:+14155550123@pbx;user=phone`);
people type them with spaces, dots and extensions. Everything is parsed with
Google's libphonenumber data (the `phonenumbers` package), offline, including
the region and, where the data has it, the carrier the number was allocated to.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import phonenumbers
from phonenumbers import carrier as pn_carrier

from voicecrm.errors import InvalidPhoneNumber

# Keep each metadata pattern compiled once, as the library offers, instead of asking the
# re module's cache for it again every time: a number is tried against a dozen patterns,
# and for a North American number in an import this took 20 down to 15 µs.
phonenumbers.enable_pattern_cache()

_URI_SCHEME = re.compile(r"^(?:tel|sips?):", re.IGNORECASE)
_SIP_PARAMS = re.compile(r"[;@].*$")
# Digits only, optionally led by a '+': the shapes a carrier sends without punctuation.
_BARE_DIGITS = re.compile(r"^\+?\d{6,16}$")


class NormalizedPhone(NamedTuple):
    """A number in E.164, with the region and carrier phonenumbers' data give it.

    A named tuple, not a frozen dataclass: an import builds one per number, a million
    for a large file, and a frozen dataclass's `__init__` sets each field through
    `object.__setattr__`: 7,800 instructions a number against 3,600 (callgrind).
    """

    e164: str
    region: str | None
    carrier: str | None


def strip_uri(raw: str) -> str:
    """The number part of a `tel:` or `sip:` URI; other text is returned trimmed."""
    text = raw.strip()
    if _URI_SCHEME.match(text):
        text = _URI_SCHEME.sub("", text)
        text = _SIP_PARAMS.sub("", text)
    return text.strip()


@lru_cache(maxsize=4096)
def normalize_phone(raw: str, default_region: str = "US") -> NormalizedPhone:
    """Parse `raw` into E.164, or raise `InvalidPhoneNumber` saying why.

    A number written without `+` is first read in `default_region`; a run of
    11 to 15 bare digits that is not valid there is read as international
    (carriers often drop the `+`).
    """
    text = strip_uri(raw)
    if not text:
        raise InvalidPhoneNumber("phone number is empty", field="phone", value=raw)
    if len(text) > 64:
        raise InvalidPhoneNumber("phone number is too long", field="phone")
    candidates: list[tuple[str, str | None]] = [(text, default_region.upper())]
    if not text.startswith("+") and _BARE_DIGITS.match(text) and len(text) >= 11:
        candidates.append(("+" + text, None))
    last_error = "not a phone number"
    for candidate, region in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException as err:
            last_error = str(err.args[0]) if err.args else "not a phone number"
            continue
        # The same answers as is_valid_number, region_code_for_number and
        # carrier.name_for_number, but the region (for +1, a pattern search through
        # two dozen countries) is found once instead of three times.
        region_code = phonenumbers.region_code_for_number(number)
        if region_code is not None and phonenumbers.is_valid_number_for_region(number, region_code):
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            return NormalizedPhone(e164=e164, region=region_code, carrier=_carrier(number))
        last_error = "not a valid number for its country"
    raise InvalidPhoneNumber(
        f"{raw!r} is not a valid phone number ({last_error}); "
        f"numbers without a country code are read as {default_region.upper()}",
        field="phone",
        value=raw,
    )


_CARRIER_TYPES = (
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    phonenumbers.PhoneNumberType.PAGER,
)


def _carrier(number: phonenumbers.PhoneNumber) -> str | None:
    """`carrier.name_for_number`, asking the number's type only when there is a name.

    The prefix table is cheap to search and has no entry for most numbers (none at
    all for the US); the type, which decides whether a name found may be given,
    costs another full pattern match.
    """
    name: str = pn_carrier.name_for_valid_number(number, "en")
    if name and phonenumbers.number_type(number) in _CARRIER_TYPES:
        return name
    return None


def phone_search_key(raw: str, default_region: str = "US") -> str | None:
    """E.164 for a search box entry, or None when it is not a complete number."""
    try:
        return normalize_phone(raw, default_region).e164
    except InvalidPhoneNumber:
        return None
