"""How the producer reads a CSV: what is a row, and how a bad file is described."""

import io

import pytest

from producer.csv_stream import CsvError, count_rows, read_rows


def rows(data: bytes, max_line_bytes: int = 1024) -> list[tuple[int, dict[str, str]]]:
    return list(read_rows(io.BytesIO(data), max_line_bytes=max_line_bytes))


def test_rows_are_header_to_value_with_their_line() -> None:
    assert rows(b"id,name\n1,a\n2,b\n") == [(2, {"id": "1", "name": "a"}), (3, {"id": "2", "name": "b"})]


def test_quoted_newlines_crlf_bom_and_blank_lines_are_valid() -> None:
    data = b'\xef\xbb\xbfid,text\r\n1,"two\r\nlines"\r\n\r\n2,"a ""quote"""\r\n'
    assert rows(data) == [(2, {"id": "1", "text": "two\r\nlines"}), (5, {"id": "2", "text": 'a "quote"'})]


def test_header_names_are_trimmed() -> None:
    assert rows(b" id , name \n1,a\n") == [(2, {"id": "1", "name": "a"})]


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        (b"", "the file is empty", None),
        (b"\n\n", "the file is empty", None),
        (b"id,name\n", "the file has a header but no data rows", 2),
        (b"id,id\n1,2\n", "the header repeats column names: id", 1),
        (b"id,\n1,2\n", "the header has an empty column name", 1),
        (b"id,name\n1,a\n2\n", "expected 2 fields, found 1", 3),
        (b"id,name\n1,a,b\n", "expected 2 fields, found 3", 2),
        (b"id,name\n1,\xff\xfe\n", "text is not valid UTF-8 (byte 2 of the line)", 2),
        (b'id,name\n1,"open\n2,b\n', "malformed CSV: unexpected end of data", 3),
        (b"id,name\n1,a\x00b\n", "line contains a NUL byte; is this a binary file?", 2),
        (b"id,name\n1," + b"x" * 2000 + b"\n", "line is longer than the limit of 1024 bytes", 2),
    ],
)
def test_bad_files_are_described_with_their_line(data: bytes, message: str, line: int | None) -> None:
    with pytest.raises(CsvError) as caught:
        count_rows(io.BytesIO(data), max_line_bytes=1024)
    assert (caught.value.message, caught.value.line) == (message, line)


def test_count_rows_counts_data_rows() -> None:
    assert count_rows(io.BytesIO(b"a\n1\n2\n3\n"), max_line_bytes=64) == 3
