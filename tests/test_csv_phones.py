"""The import's phone reader gives `normalize_phone`'s answer, number for number.

`read_phone` builds North American numbers from their digits instead of running
`phonenumbers.parse`; these tests compare the two over every NANP area code, in
the shapes people write, valid and not, and in teams of several regions. Pure:
no database.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest

from voicecrm.crm.csv_phones import read_phone
from voicecrm.crm.phones import NormalizedPhone, normalize_phone
from voicecrm.errors import InvalidPhoneNumber

SHAPES = (
    "({a}) {x}-{n}",
    "+1 {a}-{x}-{n}",
    "{a}.{x}.{n}",
    "{a}{x}{n}",
    "1{a}{x}{n}",
    "+1{a}{x}{n}",
    "1 {a} {x} {n}",
    "+1 ({a}) {x}-{n}",
    "1-{a}-{x}-{n}",
    "{a} {x} {n}",
    "({a}){x}-{n}",
)
REGIONS = ("US", "CA", "us", "JM", "PR", "FR", "GB", "DE")


def _answer(read: object, raw: str, region: str) -> NormalizedPhone | str:
    try:
        return read(raw, region)  # type: ignore[operator, no-any-return]
    except InvalidPhoneNumber as err:
        return f"refused: {err.detail}"


def _samples() -> list[str]:
    generator = random.Random(20261126)
    area_codes = sorted(
        {
            str(number.national_number)[:3]
            for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]
            for kind in range(12)
            if (number := phonenumbers.example_number_for_type(region, kind)) is not None
        }
        | {f"{generator.randrange(200, 1000)}" for _ in range(150)}
    )
    samples = []
    for area in area_codes:
        for _ in range(4):
            exchange = f"{generator.randrange(0, 1000):03d}"
            line = f"{generator.randrange(0, 10000):04d}"
            shape = generator.choice(SHAPES)
            samples.append(shape.format(a=area, x=exchange, n=line))
    return samples


@pytest.mark.parametrize("region", REGIONS)
def test_north_american_numbers_read_as_normalize_phone_reads_them(region: str) -> None:
    samples = _samples()
    valid = carriers = 0
    for raw in samples:
        expected = _answer(normalize_phone.__wrapped__, raw, region)
        assert _answer(read_phone, raw, region) == expected, raw
        valid += isinstance(expected, NormalizedPhone)
        carriers += isinstance(expected, NormalizedPhone) and expected.carrier is not None
    # Both kinds of answer were compared, not only refusals, and numbers with a carrier.
    assert 0 < valid < len(samples)
    if region.upper() in ("US", "CA", "JM", "PR"):
        assert carriers > 0


@pytest.mark.parametrize(
    "raw",
    [
        "+447912345678",
        "07912 345678",
        "tel:+1-415-555-0123",
        "+1 415 555 0123 ext. 12",
        "\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13",  # full-width digits
        "415-555-012",
        "(415) 555-01234",
        "1 (415) 555 0123",
        "+1 (268) 464-1234",
        "12",
    ],
)
@pytest.mark.parametrize("region", ["US", "GB"])
def test_other_shapes_get_normalize_phones_answer_too(raw: str, region: str) -> None:
    assert _answer(read_phone, raw, region) == _answer(normalize_phone.__wrapped__, raw, region)
