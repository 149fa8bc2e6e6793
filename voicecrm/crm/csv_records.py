"""Reading a contacts CSV file: its dialect, its header, and its records numbered.

The file is read twice (see `csv_import`). `scan` is the first pass: it refuses a
file that is not text in its encoding or not CSV before anything is written,
counts its rows, and notes the line each batch of rows ends on (`Layout`). The
second pass (`Blocks`) then cuts the file's text at those lines without parsing
it, and each block is parsed where its rows are read (`parse_block`), in a worker
process for a large file: splitting records and sending their cells across took
the event loop a fifth of its time in an import, where a block is one string.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from typing import IO, NamedTuple, TypeVar

from voicecrm.errors import InvalidCSV

T = TypeVar("T")
Record = tuple[int, int, list[str]]  # data row number, line it starts on, cells


def _delimiter(first_line: str) -> str:
    """Comma, semicolon (spreadsheets in many European locales) or tab, from the header."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: (counts[d], d == ","))
    return delimiter if counts[delimiter] else ","


def _not_csv(line: int, err: csv.Error) -> InvalidCSV:
    return InvalidCSV(f"the file is not valid CSV at line {line}: {err}")


def _is_blank(cells: list[str]) -> bool:
    return not any(cells) or "".join(cells).isspace()


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
        self.delimiter = _delimiter(first)
        self._reader = csv.reader(chain([first], self._text), "excel", delimiter=self.delimiter)
        self.header = self._next_or_none() or []
        self.blank = 0
        self._row = 0
        # The line the last record read (or the header) ends on.
        self.last_line = self._reader.line_num

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
        return _not_csv(self._reader.line_num, err)

    def _next_or_none(self) -> list[str] | None:
        return self._decoding(lambda: next(self._reader, None))

    def __iter__(self) -> Iterator[Record]:
        reader = self._reader
        try:
            for cells in reader:
                line = self.last_line + 1
                self.last_line = reader.line_num
                if _is_blank(cells):
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


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a file's batches of rows end, as the first pass found them.

    Lines are the text's lines (`\n`, `\r\n` or `\r`), which is what the csv
    module counts: a record with a line break in a quoted cell spans several.
    """

    delimiter: str
    header_lines: int  # the lines the header record takes
    batch_rows: int  # data rows in each block but the last
    ends: tuple[int, ...]  # the last line of each full block's last record
    size: int  # the file's bytes, to notice a file that changed before the second pass


def scan(file: IO[bytes], encoding: str, batch_rows: int) -> tuple[list[str], int, Layout]:
    """The first pass: the header, the number of data rows and the file's `Layout`
    for blocks of `batch_rows` rows; or `InvalidCSV`."""
    records = Records(file, encoding)
    header_lines = records.last_line
    ends: list[int] = []
    total = 0
    try:
        for total, _line, _cells in records:
            if total % batch_rows == 0:
                ends.append(records.last_line)
        size = file.seek(0, io.SEEK_END)
        layout = Layout(records.delimiter, header_lines, batch_rows, tuple(ends), size)
        return records.header, total, layout
    finally:
        records.detach()


class Block(NamedTuple):
    """A block of a file's text holding whole records: `Layout.batch_rows` data rows
    (fewer in the last), the first of them data row `first_row`; the text starts on
    line `first_line`, with any blank lines before that row."""

    first_row: int
    first_line: int
    text: str


class Blocks:
    """The second pass: the file's text after its header, cut into `Block`s at the
    lines the first pass noted, without parsing it."""

    def __init__(self, file: IO[bytes], encoding: str, layout: Layout) -> None:
        """Refuses, with `InvalidCSV`, a file whose size is no longer the one the first
        pass read: cut at the lines noted then, its records could be cut in two."""
        if file.seek(0, io.SEEK_END) != layout.size:
            raise _changed()
        file.seek(0)
        self._layout = layout
        self._text = io.TextIOWrapper(file, encoding=encoding, newline="")

    def __iter__(self) -> Iterator[Block]:
        layout, text = self._layout, self._text
        try:
            line, first_row = layout.header_lines, 1
            for _ in islice(text, line):
                pass
            for end in layout.ends:
                yield Block(first_row, line + 1, "".join(islice(text, end - line)))
                line, first_row = end, first_row + layout.batch_rows
            if rest := "".join(text):
                yield Block(first_row, line + 1, rest)
        except UnicodeDecodeError:
            # The first pass read it; only a file changed since then gets here.
            raise _changed() from None

    def detach(self) -> None:
        """Leave the underlying file open for its owner."""
        self._text.detach()


def _changed() -> InvalidCSV:
    return InvalidCSV("the file changed while it was being imported; import it again")


def parse_block(block: Block, delimiter: str) -> tuple[list[Record], int]:
    """The records of a block, numbered as `Records` numbers them; and its blank records."""
    first_row, first_line, text = block
    reader = csv.reader(io.StringIO(text, newline=""), "excel", delimiter=delimiter)
    records: list[Record] = []
    blank = 0
    before = 0  # the line the record before ended on, within the block
    try:
        for cells in reader:
            line, before = first_line + before, reader.line_num
            if _is_blank(cells):
                blank += 1
            else:
                records.append((first_row + len(records), line, cells))
    except csv.Error as err:
        raise _not_csv(first_line + before, err) from None
    return records, blank
