"""Reading a contacts CSV file: its dialect, its header, and its records numbered.

The file is read twice (see `csv_import`): `scan` is the first pass, which
refuses a file that is not text in its encoding or not CSV before anything is
written and counts its rows; `Records` then yields the records again for the
import, with the data row number and the line each starts on.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from itertools import chain
from typing import IO, TypeVar

from voicecrm.errors import InvalidCSV

T = TypeVar("T")
Record = tuple[int, int, list[str]]  # data row number, line it starts on, cells


def _dialect(first_line: str) -> type[csv.Dialect]:
    """Comma, semicolon (spreadsheets in many European locales) or tab, from the header."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: (counts[d], d == ","))

    class Sniffed(csv.excel):
        pass

    Sniffed.delimiter = delimiter if counts[delimiter] else ","
    return Sniffed


class Records:
    """The records of a CSV file after its header, numbered; counts empty lines."""

    def __init__(self, file: IO[bytes], encoding: str) -> None:
        self._file = file
        self._encoding = encoding
        file.seek(0)
        self._text = io.TextIOWrapper(file, encoding=encoding, newline="")
        first = self._decoding(self._text.readline)
        if not first.strip():
            raise InvalidCSV("the file is empty: a contacts CSV starts with a header row")
        if "\x00" in first:
            # What UTF-16 text without a byte-order mark looks like when it decodes.
            raise self._utf16()
        self._reader = csv.reader(chain([first], self._text), _dialect(first))
        self.header = self._next_or_none() or []
        self.blank = 0
        self._row = 0
        self._last_line = self._reader.line_num

    def _decoding(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except UnicodeDecodeError as err:
            raise self._undecodable(err) from None
        except csv.Error as err:
            raise self._not_csv(err) from None

    def _undecodable(self, err: UnicodeDecodeError) -> InvalidCSV:
        line = _undecodable_line(self._file, self._encoding)
        self._file.seek(0)
        start = self._file.read(256)
        if start[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or b"\x00" in start:
            return self._utf16()
        return InvalidCSV(
            f"the file is not valid {self._encoding} text near line {line} ({err.reason}); "
            "save it as UTF-8, or give its encoding",
            field="encoding",
        )

    def _utf16(self) -> InvalidCSV:
        return InvalidCSV(
            f"the file is not valid {self._encoding} text: it starts like UTF-16 text "
            '(Excel\'s "Unicode text"); give its encoding (utf-16), or save it as UTF-8',
            field="encoding",
        )

    def _not_csv(self, err: csv.Error) -> InvalidCSV:
        return InvalidCSV(f"the file is not valid CSV at line {self._reader.line_num}: {err}")

    def _next_or_none(self) -> list[str] | None:
        return self._decoding(lambda: next(self._reader, None))

    def __iter__(self) -> Iterator[Record]:
        reader = self._reader
        try:
            for cells in reader:
                line = self._last_line + 1
                self._last_line = reader.line_num
                if "".join(cells).isspace() or not any(cells):
                    self.blank += 1
                    continue
                self._row += 1
                yield self._row, line, cells
        except UnicodeDecodeError as err:
            raise self._undecodable(err) from None
        except csv.Error as err:
            raise self._not_csv(err) from None

    def detach(self) -> None:
        """Leave the underlying file open for its owner."""
        self._text.detach()


def _undecodable_line(file: IO[bytes], encoding: str) -> int:
    """The line holding the first byte `encoding` cannot decode (the text reader reads ahead)."""
    file.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 1
    for number, line in enumerate(file, start=1):
        try:
            decoder.decode(line)
        except UnicodeDecodeError:
            return number
    return number  # cut short in its last character


def scan(file: IO[bytes], encoding: str) -> tuple[list[str], int]:
    """The first pass: the header and the number of data rows, or `InvalidCSV`."""
    records = Records(file, encoding)
    try:
        return records.header, sum(1 for _ in records)
    finally:
        records.detach()
