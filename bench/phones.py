"""A million distinct, valid North American numbers, and the shapes carriers send them in.

The famous 555-01xx fictional range holds only a hundred numbers, so the
bench draws random blocks of a thousand numbers (NPA-NXX-X) across US area
codes. libphonenumber decides validity by prefix (at most the first seven
digits for +1), so a block whose first, middle and last numbers are valid and
in the US is valid throughout; `check_sample` verifies that claim on a random
sample with the real `normalize_phone` before anything is seeded. Numbers are
kept as 10-digit integers in an `array`, 8 bytes each, rather than a million
Python strings.
"""

from __future__ import annotations

import random
from array import array

import phonenumbers
from phonenumbers import PhoneNumber

from voicecrm.crm.phones import normalize_phone

BLOCK = 1000
_FIRST_BLOCK = 201_200_0  # NPA 201, NXX 200, X 0
_LAST_BLOCK = 989_999_9


def _usable(block: int) -> bool:
    for line in (0, BLOCK // 2, BLOCK - 1):
        number = PhoneNumber(country_code=1, national_number=block * BLOCK + line)
        if not phonenumbers.is_valid_number(number):
            return False
        if phonenumbers.region_code_for_number(number) != "US":
            return False
    return True


def valid_numbers(count: int, rng: random.Random) -> array[int]:
    """`count` distinct valid US national numbers (10 digits), in random order."""
    blocks: set[int] = set()
    needed = -(-count // BLOCK)
    while len(blocks) < needed:
        block = rng.randint(_FIRST_BLOCK, _LAST_BLOCK)
        if block not in blocks and _usable(block):
            blocks.add(block)
    numbers = array("q")
    for block in sorted(blocks):
        numbers.extend(range(block * BLOCK, block * BLOCK + BLOCK))
    rng.shuffle(numbers)
    del numbers[count:]
    return numbers


def e164(national: int) -> str:
    return f"+1{national}"


def national_format(national: int) -> str:
    npa, rest = divmod(national, 10_000_000)
    nxx, line = divmod(rest, 10_000)
    return f"({npa}) {nxx}-{line:04d}"


def carrier_format(national: int, style: int) -> str:
    """The number as a carrier or a person might write it; `style` picks one of six shapes."""
    npa, rest = divmod(national, 10_000_000)
    nxx, line = divmod(rest, 10_000)
    match style % 6:
        case 0:
            return f"+1{national}"
        case 1:
            return f"1{national}"
        case 2:
            return f"({npa}) {nxx}-{line:04d}"
        case 3:
            return f"tel:+1-{npa}-{nxx}-{line:04d}"
        case 4:
            return f"sip:+1{national}@pbx.example.com;user=phone"
        case _:
            return f"{npa}.{nxx}.{line:04d}"


def check_sample(numbers: array[int], rng: random.Random, size: int = 2000) -> None:
    """Every sampled number must normalise to itself, in the US, with no carrier.

    The seeded rows claim `region='US'` and `carrier=NULL`; were that wrong, the
    first lookup of a number would write an UPDATE and the bench would time a
    write where the service does a pure read.
    """
    for index in rng.sample(range(len(numbers)), min(size, len(numbers))):
        national = numbers[index]
        phone = normalize_phone.__wrapped__(carrier_format(national, index), "US")
        if (phone.e164, phone.region, phone.carrier) != (e164(national), "US", None):
            raise AssertionError(f"bench number {national} normalises to {phone}")
