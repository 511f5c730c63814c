"""Reads an uploaded CSV file row by row and says precisely what is wrong with a bad one."""

import csv
from collections.abc import Iterator
from typing import BinaryIO

BOM = b"\xef\xbb\xbf"


class CsvError(ValueError):
    """The file is not a CSV we can publish; `line` is the 1-based line where it went wrong."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def _lines(file: BinaryIO, max_line_bytes: int) -> Iterator[str]:
    """Decode the file line by line so that a decoding error names its line."""
    number = 0
    while raw := file.readline(max_line_bytes + 1):
        number += 1
        if number == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if len(raw) > max_line_bytes:
            raise CsvError(f"line is longer than the limit of {max_line_bytes} bytes", number)
        if b"\x00" in raw:
            raise CsvError("line contains a NUL byte; is this a binary file?", number)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CsvError(f"text is not valid UTF-8 (byte {exc.start} of the line)", number) from None


def _check_header(header: list[str]) -> list[str]:
    names = [name.strip() for name in header]
    if any(not name for name in names):
        raise CsvError("the header has an empty column name", 1)
    seen: set[str] = set()
    duplicates = sorted({name for name in names if name in seen or seen.add(name)})
    if duplicates:
        raise CsvError(f"the header repeats column names: {', '.join(duplicates)}", 1)
    return names


def read_rows(file: BinaryIO, *, max_line_bytes: int) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line, row) for every data row; raise CsvError at the first problem.

    `line` is the line the row starts on. Blank lines are skipped; quoted fields may hold
    newlines; a BOM at the start is ignored.
    """
    reader = csv.reader(_lines(file, max_line_bytes), strict=True)
    header: list[str] | None = None
    last_line = 0
    try:
        for record in reader:
            start, last_line = last_line + 1, reader.line_num
            if not record:
                continue
            if header is None:
                header = _check_header(record)
            elif len(record) != len(header):
                raise CsvError(f"expected {len(header)} fields, found {len(record)}", start)
            else:
                yield start, dict(zip(header, record))
    except csv.Error as exc:
        raise CsvError(f"malformed CSV: {exc}", reader.line_num or 1) from None
    if header is None:
        raise CsvError("the file is empty")


def count_rows(file: BinaryIO, *, max_line_bytes: int) -> int:
    """Validate the whole file and return its number of data rows (at least one)."""
    rows = sum(1 for _ in read_rows(file, max_line_bytes=max_line_bytes))
    if rows == 0:
        raise CsvError("the file has a header but no data rows", 2)
    return rows
