"""The failed-rows CSV (GET /uploads/{id}/failed): the columns it adds to an upload's own, and how it is written."""

import _csv
import csv
import io
from collections.abc import Iterable

# The columns the file adds after the upload's own, which an upload therefore may not name (csv_stream).
ADDED_COLUMNS = ("_row", "_attempts", "_error")
# A spreadsheet takes a cell that starts with one of these for a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def writer(buffer: io.StringIO) -> _csv.Writer:
    """A writer of the file, every cell quoted, as OWASP advises.

    Quoted, a delimiter or a quote inside a cell cannot end it and start another that a
    spreadsheet would take for a formula, and a lone carriage return stays inside its cell
    (unquoted, Python's writer leaves it bare); a quote inside is doubled, as RFC 4180 has it.
    """
    return csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL)


def cells(values: Iterable[str | int], *, raw: bool) -> list[str | int]:
    """One line's cells: as they were for a program (`raw`), else a formula's start behind a `'`.

    The `'` makes a spreadsheet show the text instead of running it; a program that wants the
    values exactly asks for `raw` (`?raw=1`).
    """
    if raw:
        return list(values)
    return [f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value
            for value in values]
