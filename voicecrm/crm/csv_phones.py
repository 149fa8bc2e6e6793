"""Phone numbers of an import: `normalize_phone`'s answers, for a third of its CPU time.

An import parses every number of a million-row file once; nothing repeats, so the
cache in front of `normalize_phone` does not help, and the number is most of an
import's CPU time: `phonenumbers.parse` alone is about two thirds of it. Most
numbers in contact lists are North American and written in a handful of shapes
(`(415) 555-0123`, `+1 415-555-0123`, `415.555.0123`, `14155550123`). For those
shapes the number `parse` would build is known from the digits: country code 1
and the ten digits after the optional `1` (an area code never starts with 0 or
1, so no national prefix is stripped, and the only characters are digits and
the separators `parse` drops). What the number then is (valid, its region, its
carrier) is still asked of `phonenumbers`, with the same calls as
`normalize_phone`, minus two that cannot change the answer: for `+1` the region
search already tested validity for every region that has no leading-digits
rule, and the carrier data has no prefix at all in most area codes (none in the
US or Canada), where the lookup is skipped.

Anything else (other countries, URIs, extensions, letters, invalid numbers, whose
error message `normalize_phone` words) goes to `normalize_phone` itself.
tests/test_csv_phones.py checks that both give the same answer.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber
from phonenumbers.carrierdata import CARRIER_DATA

from voicecrm.crm.phones import NormalizedPhone, _carrier, normalize_phone

# A NANP number: optional `+1`/`1`, area code (in optional parentheses), exchange, line;
# single spaces, dots or dashes between the groups.
_NANP = re.compile(r"(\+?1[ .-]?)?\(?([2-9]\d\d)\)?[ .-]?(\d{3})[ .-]?(\d{4})", re.ASCII)
# Default regions whose numbers without `+` are read as country code 1.
_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
# "1" + area code for the NANP areas the carrier data has a prefix in (Caribbean
# islands, not the US or Canada): elsewhere the carrier lookup finds nothing, always.
# None when the data has a prefix shorter than an area code, which could match any.
_CARRIER_AREAS: frozenset[str] | None = (
    None
    if any(key.startswith("1") and len(key) < 4 for key in CARRIER_DATA)
    else frozenset(key[:4] for key in CARRIER_DATA if key.startswith("1"))
)


def _checked_region(number: PhoneNumber) -> str | None:
    """The region of a `+1` number if it is valid there, else None.

    `region_code_for_number` returns a region without a leading-digits rule only
    when the number's type there is known, which is exactly what
    `is_valid_number_for_region` tests; only the others need that second search.
    """
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return None
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is not None and metadata.leading_digits is None:
        return region
    return region if phonenumbers.is_valid_number_for_region(number, region) else None


def read_phone(raw: str, default_region: str) -> NormalizedPhone:
    """`normalize_phone(raw, default_region)`, faster for North American numbers.

    Raises `InvalidPhoneNumber` as it does, with its message.
    """
    match = _NANP.fullmatch(raw)
    if match is not None and ("+" in (match[1] or "") or default_region.upper() in _NANP_REGIONS):
        number = PhoneNumber(country_code=1, national_number=int(match[2] + match[3] + match[4]))
        region = _checked_region(number)
        if region is not None:
            area = "1" + match[2]
            maybe_carrier = _CARRIER_AREAS is None or area in _CARRIER_AREAS
            return NormalizedPhone(
                e164=f"+1{match[2]}{match[3]}{match[4]}",
                region=region,
                carrier=_carrier(number) if maybe_carrier else None,
            )
    return normalize_phone(raw, default_region)
