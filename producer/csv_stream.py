"""Reads an uploaded CSV file row by row and says precisely what is wrong with a bad one.

It takes files as spreadsheets save them: comma, semicolon, tab or pipe between fields; UTF-8
with or without a BOM, or UTF-16 with one; LF, CRLF or CR at line ends; unnamed empty columns
at the end of the header.
"""

import codecs
import collections
import csv
import io
import re
from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO, NamedTuple

from kubejob import message
from kubejob.errors import Permanent
from producer.failed_csv import ADDED_COLUMNS

# The delimiters we detect or accept, with the word a form may give instead; the first wins a tie.
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_BY_NAME = {**{char: char for char in DELIMITERS}, **{name: char for char, name in DELIMITERS.items()}, "\\t": "\t"}
SAVE_AS_UTF8 = 'save the file as "CSV UTF-8"'
# A byte that does not decode is kept as a lone surrogate (surrogateescape / surrogatepass), so
# the csv parser can say which field it is in before we refuse it.
_UNDECODABLE = re.compile("[\ud800-\udfff]")


class CsvError(Permanent, ValueError):
    """The file is not a CSV we can publish; `line` is the 1-based line where it went wrong."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message, self.line = message, line


class Limits(NamedTuple):
    """What a file may hold (MAX_LINE_BYTES, MAX_RECORD_BYTES, MAX_COLUMNS, MAX_COLUMN_NAME_BYTES); sizes in UTF-8.

    A record is a row as the file writes it: one line, or more when a quoted field holds line breaks.
    """

    line_bytes: int
    record_bytes: int
    columns: int
    column_name_bytes: int


class Summary(NamedTuple):
    rows: int
    delimiter: str
    columns: list[str]


def delimiter_named(value: str) -> str:
    """The delimiter a form field names: the character itself, `\\t`, or comma/semicolon/tab/pipe."""
    key = value if value in DELIMITERS else value.strip().lower()
    if key not in _BY_NAME:
        raise CsvError(f'delimiter must be one of "," ";" "\\t" "|" or comma, semicolon, tab, pipe, not {value!r};'
                       " leave it out to detect it from the header")
    return _BY_NAME[key]


def _encoding(file: BinaryIO) -> str:
    """UTF-16 when the file starts with its byte-order mark, else UTF-8 (a UTF-8 BOM is dropped)."""
    start = file.tell()
    head = file.read(2)
    file.seek(start)
    return "utf-16" if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"


def _longer_in_utf8(text: str, limit: int) -> bool:
    """Whether `text` is more than `limit` bytes as UTF-8, encoding only text that could be."""
    # Measured as UTF-8, so a limit means the same for a UTF-16 file; a character is at most 4 bytes.
    return len(text) > limit or (
        len(text) * 4 > limit and not text.isascii() and _utf8_bytes(text) > limit
    )


def _utf8_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Lines:
    """The file's lines as they stream in, each checked against the limits, and where we are."""

    def __init__(self, text: io.TextIOWrapper, limits: Limits) -> None:
        self.text, self.max_line_bytes, self.max_record_bytes = text, limits.line_bytes, limits.record_bytes
        self.number = 0
        self.record_bytes = 0  # of the record being read, up to this line, once it has more than one
        self._record_first = ""  # the first line of the record being read
        self.undecodable: int | None = None  # the first line holding a byte that did not decode
        self.record_start = 1  # set by the reader after each record
        self.open_quote = 0  # the line where the last quoted field left open so far opened
        self._in_quotes = False

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        try:
            line = self.text.readline(self.max_line_bytes + 1)
        except UnicodeDecodeError as exc:
            raise CsvError(f"the UTF-16 text ends in the middle of a character; {SAVE_AS_UTF8}",
                           self.number + 1) from exc
        if not line:
            raise StopIteration
        self.number += 1
        self._check(line)
        # Most records are one line, which MAX_LINE_BYTES bounds below MAX_RECORD_BYTES: only a record
        # that goes on is counted.
        if self.number == self.record_start:
            self._record_first, self.record_bytes = line, 0
        else:
            self._check_record(line)
        self._track_quotes(line)
        return line

    def skip_blank(self) -> str | None:
        """The first line that is not blank, or None at the end: the header, which starts the first record."""
        for line in self:
            if line.strip():
                return line
            self.record_start = self.number + 1
        return None

    def _check(self, line: str) -> None:
        # Most lines are far below the limit: no call for them.
        if len(line) * 4 > self.max_line_bytes and _longer_in_utf8(line, self.max_line_bytes):
            raise CsvError(f"line is longer than the limit of {self.max_line_bytes} bytes", self.number)
        if "\x00" in line:
            raise CsvError('line contains a NUL byte; is this a binary file? Save the data as "CSV UTF-8"', self.number)
        if self.undecodable is None and not line.isascii() and _UNDECODABLE.search(line):
            self.undecodable = self.number

    def _check_record(self, line: str) -> None:
        # Refused before the csv parser takes the line, so it never holds more of one record than the limit.
        self.record_bytes += _utf8_bytes(line) + (0 if self.record_bytes else _utf8_bytes(self._record_first))
        if self.record_bytes > self.max_record_bytes:
            raise CsvError(f"the record that starts on this line (a row, with the line breaks inside its quoted "
                           f"fields) is longer than MAX_RECORD_BYTES ({self.max_record_bytes} bytes); is a "
                           "closing quote missing? If not, split the row, or raise MAX_RECORD_BYTES",
                           self.record_start)

    def _track_quotes(self, line: str) -> None:
        if self.number == self.record_start:
            self._in_quotes = False
        quotes = line.count('"')
        if not quotes:
            return
        self._in_quotes ^= quotes % 2 == 1
        # Still open after an even number: this line closed a field and opened another, unless
        # every quote on it was doubled (a quote inside the field).
        if self._in_quotes and (quotes % 2 or line.replace('""', "").count('"')):
            self.open_quote = self.number


class _Header:
    """The column names, and how many unnamed empty columns the header ends with."""

    def __init__(self, record: list[str], line: int, limits: Limits) -> None:
        if len(record) > limits.columns:
            raise CsvError(f"the header has {len(record)} columns, more than MAX_COLUMNS ({limits.columns}); "
                           "split the columns over several files, or raise MAX_COLUMNS", line)
        names = [name.strip() for name in record]
        self.width = len(names)
        while not names[-1]:  # the record has a non-empty field, so this stops
            names.pop()
        if "" in names:
            raise CsvError(f"column {names.index('') + 1} of the header has no name; name it, or delete the column",
                           line)
        duplicates = sorted(name for name, count in collections.Counter(names).items() if count > 1)
        if duplicates:
            raise CsvError(f"the header repeats column names: {', '.join(duplicates)}; give each column a name of "
                           "its own", line)
        _check_names(names, line, limits.column_name_bytes)
        self.names = names
        # The most the names add to a row's message body; each value's character adds at most
        # message.ESCAPED_CHAR_BYTES more.
        self.body_bytes = message.largest_body(columns=len(names), name_chars=sum(map(len, names)), value_chars=0)

    def row(self, record: list[str], line: int) -> dict[str, str]:
        named = len(self.names)
        if len(record) == named:
            return dict(zip(self.names, record, strict=False))
        if not named <= len(record) <= self.width:
            raise CsvError(f"expected {named} fields, found {len(record)}", line)
        for column in range(named, len(record)):
            if record[column].strip():
                raise CsvError(f"column {column + 1} has a value but no name in the header; name the column, "
                               "or delete the value", line)
        return dict(zip(self.names, record, strict=False))


def _check_names(names: list[str], line: int, limit: int) -> None:
    """Refuse a name longer than `limit` bytes, or one the failed-rows download adds itself."""
    long = next((column for column, name in enumerate(names, start=1) if _longer_in_utf8(name, limit)), None)
    if long is not None:
        raise CsvError(f"the name of column {long} is longer than MAX_COLUMN_NAME_BYTES ({limit} bytes); "
                       "shorten it, or raise MAX_COLUMN_NAME_BYTES", line)
    reserved = [name for name in ADDED_COLUMNS if name in names]
    if reserved:
        raise CsvError(f"the header names {', '.join(reserved)}, which the failed-rows download "
                       f"(GET /uploads/{{id}}/failed) adds to every row; rename the column", line)


def _width(line: str, delimiter: str) -> int:
    return len(next(csv.reader([line], delimiter=delimiter)))


def _detect(header_line: str) -> str:
    """The delimiter that splits the header line into the most fields; comma on a tie."""
    return max(DELIMITERS, key=lambda delimiter: _width(header_line, delimiter))


def _undecodable(lines: _Lines, record: list[str], header: _Header | None, encoding: str) -> CsvError:
    where = f"line {lines.undecodable}"
    column = next((i for i, field in enumerate(record) if _UNDECODABLE.search(field)), None)
    if column is not None:
        name = header.names[column] if header and column < len(header.names) else ""
        where += f", column {column + 1}" + (f' ("{name}")' if name else "")
    if encoding == "utf-16":
        return CsvError(f"{where}: the text is not valid UTF-16; {SAVE_AS_UTF8}", lines.undecodable)
    return CsvError(f'{where}: the text is not UTF-8 (Excel\'s plain "CSV" saves Windows-1252); {SAVE_AS_UTF8}',
                    lines.undecodable)


def _quoted_field_too_long(limit: int, line: int) -> CsvError:
    return CsvError(f"a quoted field opened on this line is longer than the limit of {limit} bytes; "
                    "is its closing quote missing?", line)


def _check_fields(record: list[str], start: int, limit: int) -> None:
    """Refuse a field of a record that spans lines if it is more than `limit` bytes as UTF-8.

    The csv module's field limit counts characters, and each line was checked on its own, so
    only a quoted field over several lines can be short enough in characters but too long in bytes.
    """
    line = start
    for field in record:
        if _longer_in_utf8(field, limit):
            raise _quoted_field_too_long(limit, line)
        line += field.count("\n") + field.count("\r") - field.count("\r\n")  # where the next field opens


def _check_message(row: dict[str, str], line: int, limit: int) -> None:
    """Refuse a row whose message body, as message.encode makes it, is more than `limit` bytes."""
    size = len(message.encode(row, upload_id="", row_number=0, line=line)[0])  # the body is the row alone
    if size > limit:
        raise CsvError(f"row is {size} bytes as a message, more than MAX_MESSAGE_BYTES ({limit}); split the row, or "
                       "raise MAX_MESSAGE_BYTES together with the worker Job's memory limit (a worker holds "
                       "WORKER_PREFETCH such rows) and the broker's max_message_size", line)


def _malformed(exc: csv.Error, lines: _Lines, start: int) -> CsvError:
    opened = max(lines.open_quote, start)
    if str(exc) == "unexpected end of data":
        return CsvError('a quote opened on this line is not closed; end the quoted field with " '
                        '(a quote inside a field is written "")', opened)
    if str(exc).startswith("field larger than field limit"):
        return _quoted_field_too_long(lines.max_line_bytes, opened)
    if str(exc).endswith("expected after '\"'"):
        return CsvError('a quoted field goes on after its closing quote; write a quote inside a field as ""',
                        lines.number)
    return CsvError(f"malformed CSV: {exc}", lines.number)


class _Reader:
    """The data rows of one file; `delimiter` is the one used once reading has begun.

    Given `max_message_bytes`, a row whose message body would be longer is refused.
    """

    def __init__(self, file: BinaryIO, *, limits: Limits, delimiter: str | None,
                 max_message_bytes: int | None = None) -> None:
        self.file, self.limits, self.delimiter = file, limits, delimiter
        self.max_message_bytes = max_message_bytes
        self.columns: list[str] = []

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        encoding = _encoding(self.file)
        # newline="" ends a line at LF, CRLF or a lone CR, and leaves line ends inside quoted
        # fields as they were written.
        errors = "surrogatepass" if encoding == "utf-16" else "surrogateescape"
        text = io.TextIOWrapper(self.file, encoding=encoding, errors=errors, newline="")
        try:
            yield from self._rows(_Lines(text, self.limits), encoding)
        finally:
            text.detach()  # the upload's file stays open for the second pass

    def _rows(self, lines: _Lines, encoding: str) -> Iterator[tuple[int, dict[str, str]]]:
        header_line = lines.skip_blank()
        if header_line is None:
            raise CsvError("the file is empty")
        # The csv module's own field limit (131,072 characters) would otherwise cap a field below
        # MAX_LINE_BYTES; it is process-wide, and every upload in a process has the same limit.
        # It counts characters and bounds what a field holds; _check_fields counts its bytes.
        max_line_bytes = self.limits.line_bytes
        csv.field_size_limit(max_line_bytes)
        self.delimiter = self.delimiter or _detect(header_line)
        reader = csv.reader(chain([header_line], lines), delimiter=self.delimiter, strict=True)
        header: _Header | None = None
        last = lines.number - 1
        max_body = self.max_message_bytes
        try:
            for record in reader:
                start, last = last + 1, lines.number
                lines.record_start = last + 1
                if lines.undecodable:
                    raise _undecodable(lines, record, header, encoding)
                text = "".join(record)
                # A one-line record was checked with its line, and a record of at most a quarter
                # of the limit in characters cannot hold a field over it in bytes.
                if last > start and len(text) * 4 > max_line_bytes:
                    _check_fields(record, start, max_line_bytes)
                if not text.strip():
                    continue
                if header is None:
                    header = _Header(record, start, self.limits)
                    self.columns = header.names
                else:
                    row = header.row(record, start)
                    # `text` holds every value: only a row that might be over the limit is encoded.
                    if max_body is not None and header.body_bytes + message.ESCAPED_CHAR_BYTES * len(text) > max_body:
                        _check_message(row, start, max_body)
                    yield start, row
        except csv.Error as exc:
            if lines.undecodable:
                raise _undecodable(lines, [], header, encoding) from exc
            raise _malformed(exc, lines, last + 1) from exc
        if header is None:
            raise CsvError("the file is empty")


def read_rows(file: BinaryIO, *, limits: Limits, delimiter: str | None = None) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line, row) for every data row; raise CsvError at the first problem.

    `line` is the line the row starts on. Blank rows (nothing but spaces and delimiters) are
    skipped; quoted fields may hold delimiters and line breaks. Without `delimiter`, the header
    line decides it.
    """
    return iter(_Reader(file, limits=limits, delimiter=delimiter))


def count_rows(file: BinaryIO, *, limits: Limits, max_message_bytes: int, delimiter: str | None = None) -> Summary:
    """Validate the whole file: its number of data rows (at least one), the delimiter and the columns.

    Every row's message body must be at most `max_message_bytes`, which workers and the broker take; so
    read_rows, the second pass, only reads.
    """
    reader = _Reader(file, limits=limits, delimiter=delimiter, max_message_bytes=max_message_bytes)
    rows = sum(1 for _ in reader)
    if rows == 0:
        raise CsvError("the file has a header but no data rows", 2)
    assert reader.delimiter is not None  # set once the header is read, and an empty file raised
    return Summary(rows, reader.delimiter, reader.columns)
