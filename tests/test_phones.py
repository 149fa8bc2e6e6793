"""Phone numbers become E.164 whatever shape they arrive in; anything else is refused clearly.

Pure: no database. What is stored beside the E.164 form (the original text, the
label) and the one-contact-per-number rule are tested where they live, in the
contacts API tests and in tests/test_migrations.py.
"""

from __future__ import annotations

import pytest

from voicecrm.crm.phones import normalize_phone, phone_search_key, strip_uri
from voicecrm.errors import InvalidInput, InvalidPhoneNumber


@pytest.mark.parametrize(
    "raw",
    [
        "+14155550123",
        "14155550123",
        "(415) 555-0123",
        "415.555.0123",
        "415 555 0123",
        "  +1 415-555-0123  ",
        "tel:+1-415-555-0123",
        "TEL:+14155550123",
        "sip:+14155550123@pbx.example.com;user=phone",
        "sips:+14155550123@pbx.example.com",
        "+1 415 555 0123 ext. 12",
        "\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff12\uff13",  # full-width digits
    ],
)
def test_every_written_form_of_a_number_becomes_the_same_e164(raw: str) -> None:
    phone = normalize_phone(raw, "US")
    assert phone.e164 == "+14155550123"
    assert phone.region == "US"


@pytest.mark.parametrize(
    ("raw", "region", "e164", "number_region"),
    [
        ("06 12 34 56 78", "FR", "+33612345678", "FR"),
        ("07912 345678", "GB", "+447912345678", "GB"),
        ("030 1234567", "DE", "+49301234567", "DE"),
        ("0049 30 1234567", "DE", "+49301234567", "DE"),
        ("00 44 7912 345678", "FR", "+447912345678", "GB"),
        ("+33 6 12 34 56 78", "US", "+33612345678", "FR"),
        ("06 12 34 56 78", "fr", "+33612345678", "FR"),
    ],
)
def test_a_number_without_a_country_code_is_read_in_the_teams_region(
    raw: str, region: str, e164: str, number_region: str
) -> None:
    phone = normalize_phone(raw, region)
    assert (phone.e164, phone.region) == (e164, number_region)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("447912345678", "+447912345678"), ("33612345678", "+33612345678")],
)
def test_bare_international_digits_from_a_carrier_that_dropped_the_plus_are_understood(
    raw: str, e164: str
) -> None:
    assert normalize_phone(raw, "US").e164 == e164


def test_the_carrier_comes_from_offline_data_where_it_exists() -> None:
    assert normalize_phone("+447912345678").carrier == "O2"
    assert normalize_phone("+14155550123").carrier is None  # no carrier data for the US


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("12", "not a valid number for its country"),
        ("abc", "did not seem to be a phone number"),
        ("+999 123", "Could not interpret numbers after plus-sign"),
        ("+1 555 0100", "not a valid number for its country"),
        ("+1415555012", "not a valid number for its country"),
        ("sip:alice@example.com", "did not seem to be a phone number"),
        ("11111111111111111111", "not a valid number for its country"),
    ],
)
def test_a_string_that_is_not_a_phone_number_is_refused_saying_why(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(raw, "US")
    error = caught.value
    assert error.detail.startswith(f"{raw!r} is not a valid phone number (")
    assert reason in error.detail
    assert error.detail.endswith("numbers without a country code are read as US")
    assert error.extra == {"field": "phone", "value": raw}
    assert error.title == "Invalid phone number"


@pytest.mark.parametrize("raw", ["", "   ", "tel:", "sip:"])
def test_an_empty_number_is_refused_as_empty(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="phone number is empty"):
        normalize_phone(raw, "US")


def test_an_absurdly_long_number_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(InvalidPhoneNumber, match="phone number is too long"):
        normalize_phone("1" * 65, "US")


def test_the_error_names_the_region_used_for_numbers_without_a_country_code() -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"read as FR$"):
        normalize_phone("12", "fr")


def test_an_invalid_phone_number_is_invalid_input_so_every_edge_explains_it() -> None:
    assert issubclass(InvalidPhoneNumber, InvalidInput)


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("tel:+1-415-555-0123", "+1-415-555-0123"),
        ("sip:+14155550123@pbx;user=phone", "+14155550123"),
        ("sips:100@pbx", "100"),
        ("  (415) 555-0123 ", "(415) 555-0123"),
    ],
)
def test_a_uri_is_reduced_to_its_number_and_other_text_is_only_trimmed(
    raw: str, number: str
) -> None:
    assert strip_uri(raw) == number


def test_a_search_box_entry_is_a_number_only_when_it_is_complete() -> None:
    assert phone_search_key("415 555 0123") == "+14155550123"
    assert phone_search_key("06 12 34 56 78", "FR") == "+33612345678"
    assert phone_search_key("0123") is None
    assert phone_search_key("jane") is None
