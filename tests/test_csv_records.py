"""Cutting a CSV file into blocks of whole records, and numbering their rows.

The import's second pass cuts the file's text at the lines the first pass noted,
without parsing it, and each block is parsed where its rows are read. Whatever
the file holds (cells spanning lines, any line ending, blank lines at a cut),
the records, their row and line numbers and the blank count must be exactly
those of reading the file through in one pass.
"""

from __future__ import annotations

import io
import pickle

import pytest

from voicecrm.crm.csv_records import Block, Blocks, Record, Records, parse_block, scan
from voicecrm.errors import InvalidCSV

AWKWARD = (
    '"first\nname",phone,notes\r\n'  # a header spanning two lines
    "Ada,+12125550101,plain\n"
    '"Bob ""B""",+12125550102,"two\r\nlines"\n'
    "\n"
    ",,\n"
    'Cy,+12125550103,"three\rlines\rhere"\r'  # old Mac line ends
    "   ,  ,\n"
    'Di,+12125550104,"ends with a line break\n"\n'
    "Ed,+12125550105,\n"
    "\n"
    "\n"
)


def one_pass(data: bytes, encoding: str = "utf-8") -> tuple[list[Record], int]:
    records = Records(io.BytesIO(data), encoding)
    read = list(records)
    return read, records.blank


def in_blocks(data: bytes, batch_rows: int, encoding: str = "utf-8") -> tuple[list[Record], int]:
    file = io.BytesIO(data)
    _header, total, layout = scan(file, encoding, batch_rows)
    blocks = Blocks(file, encoding, layout)
    read: list[Record] = []
    blank = 0
    for block in blocks:
        records, block_blank = parse_block(block, layout.delimiter)
        assert len(records) <= batch_rows
        read += records
        blank += block_blank
    blocks.detach()
    assert len(read) == total
    return read, blank


@pytest.mark.parametrize("batch_rows", [1, 2, 3, 5, 6, 100])
def test_blocks_give_the_records_rows_lines_and_blanks_of_one_pass(batch_rows: int) -> None:
    data = AWKWARD.encode()
    expected, blank = one_pass(data)
    assert [(row, line) for row, line, _cells in expected] == [
        (1, 3),
        (2, 4),
        (3, 8),
        (4, 12),
        (5, 14),
    ]
    assert expected[1][2] == ['Bob "B"', "+12125550102", "two\r\nlines"]
    assert blank == 5
    assert in_blocks(data, batch_rows) == (expected, blank)


@pytest.mark.parametrize(
    ("batch_rows", "counts"),
    [(2, [2, 2, 1]), (5, [5, 0])],  # 0: the blank lines after the last full batch, alone
)
def test_every_block_but_the_last_holds_a_batch_of_rows(batch_rows: int, counts: list[int]) -> None:
    file = io.BytesIO(AWKWARD.encode())
    _header, _total, layout = scan(file, "utf-8", batch_rows)
    blocks = list(Blocks(file, "utf-8", layout))
    assert [len(parse_block(block, layout.delimiter)[0]) for block in blocks] == counts
    assert [block.first_row for block in blocks] == [1 + i * batch_rows for i in range(len(counts))]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "cp1252"])
def test_blocks_read_any_encoding_and_delimiter_as_one_pass_does(encoding: str) -> None:
    text = 'Név;Telefon\r\nÁda;+12125550101\r\n\r\n"Zoë;Z";+12125550102\r\nÉd;\r\n'
    data = text.encode(encoding)
    expected, blank = one_pass(data, encoding)
    assert expected[1][2] == ["Zoë;Z", "+12125550102"]
    for batch_rows in (1, 2, 4):
        assert in_blocks(data, batch_rows, encoding) == (expected, blank)


def test_a_block_is_cheap_to_send_to_a_worker_process() -> None:
    """One string and two numbers, whatever the rows hold."""
    block = Block(1, 2, "Ada,+12125550101\n" * 2_000)
    assert pickle.loads(pickle.dumps(block)) == block
    assert len(pickle.dumps(block)) < len(block.text) + 100


@pytest.mark.parametrize(
    "now",
    [
        b'name,phone\n"Ada\n,+12125550101\n',  # longer: a cut could fall inside a record
        b"name,phone\nAd,+12125550101\n",  # shorter
        b"name,phone\nAda,+121255501\xff\xfe\n",  # the same size, no longer text
    ],
)
def test_a_file_changed_between_the_passes_is_refused_not_misread(now: bytes) -> None:
    file = io.BytesIO(b"name,phone\nAda,+12125550101\n")
    _header, _total, layout = scan(file, "utf-8", 1)
    with pytest.raises(InvalidCSV, match="the file changed while it was being imported"):
        list(Blocks(io.BytesIO(now), "utf-8", layout))


def test_a_csv_error_from_a_worker_process_survives_its_way_back() -> None:
    error = InvalidCSV("the file is not valid CSV at line 3: field larger than field limit")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)
