"""How the producer reads a CSV: what is a row, and how a bad file is described."""

import csv
import io

import pytest

from kubejob.message import encode
from producer.csv_stream import CsvError, Limits, Summary, count_rows, delimiter_named, read_rows

SAVE_AS = 'save the file as "CSV UTF-8"'
NOT_CLOSED = ('a quote opened on this line is not closed; end the quoted field with " '
              '(a quote inside a field is written "")')


BROKER_LIMIT = 16 * 1024**2  # RabbitMQ 4.0's max_message_size


def limits(line_bytes: int = 1024, **other: int) -> Limits:
    return Limits(**({"line_bytes": line_bytes, "record_bytes": 4 * line_bytes, "columns": 50, "column_name_bytes": 256}
                     | other))


def rows(data: bytes, max_line_bytes: int = 1024, delimiter: str | None = None) -> list[tuple[int, dict[str, str]]]:
    return list(read_rows(io.BytesIO(data), limits=limits(max_line_bytes), delimiter=delimiter))


def count(data: bytes, max_line_bytes: int = 1024, max_message_bytes: int = BROKER_LIMIT, **other: int) -> Summary:
    return count_rows(io.BytesIO(data), limits=limits(max_line_bytes, **other), max_message_bytes=max_message_bytes)


def test_rows_are_header_to_value_with_their_line() -> None:
    assert rows(b"id,name\n1,a\n2,b\n") == [(2, {"id": "1", "name": "a"}), (3, {"id": "2", "name": "b"})]


def test_quoted_newlines_crlf_bom_and_blank_lines_are_valid() -> None:
    data = b'\xef\xbb\xbfid,text\r\n1,"two\r\nlines"\r\n\r\n2,"a ""quote"""\r\n'
    assert rows(data) == [(2, {"id": "1", "text": "two\r\nlines"}), (5, {"id": "2", "text": 'a "quote"'})]


def test_header_names_are_trimmed() -> None:
    assert rows(b" id , name \n1,a\n") == [(2, {"id": "1", "name": "a"})]


@pytest.mark.parametrize(
    ("data", "delimiter"),
    [
        (b"name,city,amount\nJose,Paris,150\n", ","),
        (b"name;city;amount\nJose;Paris;150\n", ";"),
        (b"name\tcity\tamount\nJose\tParis\t150\n", "\t"),
        (b"name|city|amount\nJose|Paris|150\n", "|"),
    ],
    ids=["comma", "semicolon", "tab", "pipe"],
)
def test_the_delimiter_is_detected_from_the_header(data: bytes, delimiter: str) -> None:
    summary = count(data)
    assert summary == Summary(rows=1, delimiter=delimiter, columns=["name", "city", "amount"])
    assert rows(data) == [(2, {"name": "Jose", "city": "Paris", "amount": "150"})]


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [
        (b"amount\n", ","),  # one column: no delimiter to see
        (b"a;b,c;d\n", ";"),  # the one that gives the most columns
        (b"a,b;c|d\n", ","),  # a tie goes to comma
        (b'"last; first",city\n', ","),  # a delimiter inside a quoted name does not count
    ],
)
def test_detection_takes_the_delimiter_giving_the_most_columns(header: bytes, delimiter: str) -> None:
    assert count(header + header).delimiter == delimiter


def test_quoted_fields_hold_the_delimiter_whatever_it_is() -> None:
    data = b'name;note\n"Jose";"a; b"\n"Ana";"two\nlines; ""quoted"""\n'
    assert rows(data) == [(2, {"name": "Jose", "note": "a; b"}), (3, {"name": "Ana", "note": 'two\nlines; "quoted"'})]


def test_a_given_delimiter_overrides_detection() -> None:
    data = b"name;city\nJose;Paris\n"
    assert rows(data, delimiter=",") == [(2, {"name;city": "Jose;Paris"})]


@pytest.mark.parametrize(
    ("value", "delimiter"),
    [(",", ","), (";", ";"), ("\t", "\t"), ("\\t", "\t"), ("|", "|"),
     ("comma", ","), ("Semicolon", ";"), (" tab ", "\t"), ("PIPE", "|")],
)
def test_a_delimiter_is_named_by_its_character_or_its_word(value: str, delimiter: str) -> None:
    assert delimiter_named(value) == delimiter


@pytest.mark.parametrize("value", [":", "space", ",;", "x"])
def test_an_unknown_delimiter_is_refused_naming_the_allowed_ones(value: str) -> None:
    with pytest.raises(CsvError) as caught:
        delimiter_named(value)
    assert caught.value.message.startswith('delimiter must be one of "," ";" "\\t" "|" or comma, semicolon, tab, pipe')
    assert repr(value) in caught.value.message and caught.value.line is None


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_read_with_its_lines(codec: str) -> None:
    text = '\ufeffname\tcity\r\nCafé\t"Zoë\r\nsur mer"\r\n\r\nJosé\tSão Paulo\r\n'
    assert rows(text.encode(codec)) == [
        (2, {"name": "Café", "city": "Zoë\r\nsur mer"}),
        (5, {"name": "José", "city": "São Paulo"}),
    ]


def test_a_large_utf16_file_streams_through() -> None:
    body = "".join(f"{i},Zoë {i}\r\n" for i in range(50_000))
    data = ("id,name\r\n" + body).encode("utf-16")
    assert count(data, max_line_bytes=64) == Summary(50_000, ",", ["id", "name"])
    assert rows(data, max_line_bytes=64)[-1] == (50_001, {"id": "49999", "name": "Zoë 49999"})


def test_trailing_unnamed_empty_columns_are_dropped() -> None:
    data = b"a,b,c,,,\r\n1,2,3,,,\r\n4,5,6\r\n7,8,9,\r\n"
    assert rows(data) == [
        (2, {"a": "1", "b": "2", "c": "3"}),
        (3, {"a": "4", "b": "5", "c": "6"}),
        (4, {"a": "7", "b": "8", "c": "9"}),
    ]


def test_rows_of_empty_fields_and_lines_of_spaces_are_skipped_like_blank_lines() -> None:
    data = b"\n  \na,b,c\n,,\n1,2,3\n   \n, ,\n\t\n4,5,6\n,,\n"
    assert rows(data) == [(5, {"a": "1", "b": "2", "c": "3"}), (9, {"a": "4", "b": "5", "c": "6"})]


def test_cr_only_line_ends_are_line_ends() -> None:
    data = b'id,note\r1,a\r2,"two\rlines"\r\r3,c\r'
    assert rows(data) == [(2, {"id": "1", "note": "a"}), (3, {"id": "2", "note": "two\rlines"}),
                          (6, {"id": "3", "note": "c"})]


def test_a_large_cr_only_file_is_not_one_long_line() -> None:
    data = b"id,value\r" + b"".join(b"%d,v%d\r" % (i, i) for i in range(5000))
    assert count(data, max_line_bytes=64) == Summary(5000, ",", ["id", "value"])


def test_a_field_may_be_as_long_as_max_line_bytes() -> None:
    limit = 4 * 131_072  # four times the csv module's own default field limit
    value = "x" * (limit - len("\n"))
    assert rows(f"blob\n{value}\n".encode(), max_line_bytes=limit) == [(2, {"blob": value})]
    quoted = "y\n" * (limit // 2 - 2)  # one field over many lines, just under the limit
    assert rows(f'id,blob\n1,"{quoted}"\n'.encode(), max_line_bytes=limit) == [(2, {"id": "1", "blob": quoted})]


TOO_LONG = "a quoted field opened on this line is longer than the limit of {} bytes; is its closing quote missing?"
EMOJI = "\U0001f600"  # 4 bytes in UTF-8, one character


@pytest.mark.parametrize("codec", ["utf-8", "utf-16"])
def test_a_field_of_4_byte_characters_over_the_limit_in_bytes_is_refused(codec: str) -> None:
    limit = 1024**2
    field = (EMOJI * 999 + "\n") * 1001  # 1,000,000 characters, 4.0 MB of UTF-8, over lines under the limit
    data = f'id,blob\n1,a\n2,"{field}"\n'.encode(codec)
    with pytest.raises(CsvError) as caught:
        count(data, max_line_bytes=limit)
    assert (caught.value.message, caught.value.line) == (TOO_LONG.format(limit), 3)


@pytest.mark.parametrize("codec", ["utf-8", "utf-16"])
@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_a_multi_line_field_may_be_as_long_as_the_limit_in_bytes_and_no_longer(codec: str, line_end: str) -> None:
    field = (EMOJI * 40 + line_end) * 5 + "é" * 9  # 2 bytes each
    field += "x" * (1024 - len(field.encode()))
    data = f'id,blob\n1,"{field}"\n'.encode(codec)
    assert rows(data) == [(2, {"id": "1", "blob": field})]
    with pytest.raises(CsvError) as caught:
        rows(f'id,blob\n1,"{field}x"\n'.encode(codec))
    assert (caught.value.message, caught.value.line) == (TOO_LONG.format(1024), 2)


def test_a_field_too_long_in_bytes_is_named_by_the_line_it_opened_on() -> None:
    field = ("é" * 100 + "\r\n") * 6  # 1212 bytes in 606 characters
    data = f'id,a,b,c\n1,"two\r\nlines","three\nmore\rlines","{field}"\n'.encode()
    with pytest.raises(CsvError) as caught:
        rows(data)
    assert (caught.value.message, caught.value.line) == (TOO_LONG.format(1024), 5)


def body_bytes(row: dict[str, str]) -> int:
    """The size of the row's message body, as the producer publishes it."""
    return len(encode(row, upload_id="u", row_number=2, line=3)[0])


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"id": "2", "text": "plain " * 100}, id="ascii"),
        pytest.param({"id": "2", "text": "\x01\x02\x1f\x7f" * 100}, id="control-characters"),  # \u0001: 6 bytes each
        pytest.param({"id": "2", "text": 'a "quote", a \\, a tab\t, lines\r\n, é and \U0001f600 ' * 10},
                     id="escapes-and-multi-byte-over-lines"),
        pytest.param({"\x01" * 150: "2" * 20, '"\x02' * 75: "x" * 20}, id="names-escaped-too"),
    ],
)
def test_a_row_is_refused_when_its_message_is_one_byte_over_max_message_bytes(row: dict[str, str]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(row), ["1"] * len(row), list(row.values())])
    data, size = out.getvalue().encode(), body_bytes(row)
    assert count(data, max_message_bytes=size) == Summary(2, ",", list(row))
    with pytest.raises(CsvError) as caught:
        count(data, max_message_bytes=size - 1)
    assert (caught.value.message, caught.value.line) == (
        f"row is {size} bytes as a message, more than MAX_MESSAGE_BYTES ({size - 1}); split the row, or raise "
        "MAX_MESSAGE_BYTES together with the worker Job's memory limit (a worker holds WORKER_PREFETCH such rows) "
        "and the broker's max_message_size", 3)


@pytest.mark.parametrize(
    ("data", "message", "line"),
    [
        (b"", "the file is empty", None),
        (b"\n\n", "the file is empty", None),
        (b" \n,,\n", "the file is empty", None),
        (b"id,name\n", "the file has a header but no data rows", 2),
        (b"id,name\n,\n", "the file has a header but no data rows", 2),
        (b"id,id\n1,2\n", "the header repeats column names: id; give each column a name of its own", 1),
        (b"id,,x\n1,2,3\n", "column 2 of the header has no name; name it, or delete the column", 1),
        (b"\n\n a ; ; c\n1;2;3\n", "column 2 of the header has no name; name it, or delete the column", 3),
        (b"id,name\n1,a\n2\n", "expected 2 fields, found 1", 3),
        (b"id,name\n1,a,b\n", "expected 2 fields, found 3", 2),
        (b"id,name,,\n1,a,,,\n", "expected 2 fields, found 5", 2),
        (b"id,name,,\n1,a,,\n2,b,,x\n",
         "column 4 has a value but no name in the header; name the column, or delete the value", 3),
        (b"id;name\n1;Caf\xe9\n",
         f'line 2, column 2 ("name"): the text is not UTF-8 (Excel\'s plain "CSV" saves Windows-1252); {SAVE_AS}', 2),
        (b'id,name\n1,"two\nCaf\xe9"\n',
         f'line 3, column 2 ("name"): the text is not UTF-8 (Excel\'s plain "CSV" saves Windows-1252); {SAVE_AS}', 3),
        (b"id,caf\xe9\n1,2\n",
         f'line 1, column 2: the text is not UTF-8 (Excel\'s plain "CSV" saves Windows-1252); {SAVE_AS}', 1),
        ("id,name\n1,\ud800\n".encode("utf-16", "surrogatepass"),
         f'line 2, column 2 ("name"): the text is not valid UTF-16; {SAVE_AS}', 2),
        ("id,name\n1,a\n".encode("utf-16")[:-1], f"the UTF-16 text ends in the middle of a character; {SAVE_AS}", 2),
        (b'id,name\n1,"open\n2,b\n',
         NOT_CLOSED, 2),
        (b'id,a,b\n1,"x\ny","open\n2,b,c\n',
         NOT_CLOSED, 3),
        (b'id,name\r1,a\r2,"open\r3,c\r',
         NOT_CLOSED, 3),
        (b'id,name\n1,"a"b\n', 'a quoted field goes on after its closing quote; write a quote inside a field as ""', 2),
        (b'id,name\n1,"open\n' + b"more\n" * 300,
         "a quoted field opened on this line is longer than the limit of 1024 bytes; is its closing quote missing?", 2),
        (b"id,name\n1,a\x00b\n", 'line contains a NUL byte; is this a binary file? Save the data as "CSV UTF-8"', 2),
        ("id,name\n1,a\n".encode("utf-16-le"),
         'line contains a NUL byte; is this a binary file? Save the data as "CSV UTF-8"', 1),
        (b"id,name\n1," + b"x" * 2000 + b"\n", "line is longer than the limit of 1024 bytes", 2),
        (b"id,name\n1," + "é".encode() * 600 + b"\n", "line is longer than the limit of 1024 bytes", 2),
        (b"id,name\r1," + b"x" * 2000 + b"\r", "line is longer than the limit of 1024 bytes", 2),
    ],
)
def test_bad_files_are_described_with_their_line(data: bytes, message: str, line: int | None) -> None:
    with pytest.raises(CsvError) as caught:
        count(data)
    assert (caught.value.message, caught.value.line) == (message, line)


def test_no_message_counts_bytes_from_zero() -> None:
    with pytest.raises(CsvError) as caught:
        count(b"id,name\n1,a\n2,\xe9t\xe9\n")
    assert "byte" not in caught.value.message and caught.value.line == 3


def test_count_rows_counts_data_rows() -> None:
    assert count(b"a\n1\n2\n3\n", max_line_bytes=64) == Summary(rows=3, delimiter=",", columns=["a"])


def test_reading_leaves_the_upload_open_for_the_second_pass() -> None:
    file = io.BytesIO(b"a;b\n1;2\n")
    summary = count_rows(file, limits=limits(64), max_message_bytes=BROKER_LIMIT)
    file.seek(0)
    assert list(read_rows(file, limits=limits(64), delimiter=summary.delimiter)) == [(2, {"a": "1", "b": "2"})]


def record(fields: int, size: int) -> str:
    """A record of `fields` quoted fields of `size` characters, each over two lines."""
    half = "y" * (size // 2 - 1)
    return ",".join(f'"{half}\n{half}"' for _ in range(fields)) + "\n"


RECORD_TOO_LONG = ("the record that starts on this line (a row, with the line breaks inside its quoted fields) is "
                   "longer than MAX_RECORD_BYTES ({} bytes); is a closing quote missing? If not, split the row, or "
                   "raise MAX_RECORD_BYTES")


def test_a_record_of_exactly_max_record_bytes_is_read_and_one_byte_more_is_refused_where_it_starts() -> None:
    row = record(6, 800)  # every line and field under MAX_LINE_BYTES (1024); 4,804 bytes in all
    data = f"{','.join('abcdef')}\n1,2,3,4,5,6\n{row}".encode()
    assert count(data, record_bytes=len(row)) == Summary(2, ",", list("abcdef"))
    with pytest.raises(CsvError) as caught:
        count(data, record_bytes=len(row) - 1)
    assert (caught.value.message, caught.value.line) == (RECORD_TOO_LONG.format(len(row) - 1), 3)


def test_a_record_is_counted_in_utf8_bytes() -> None:
    row = record(1, 400).replace("y", "é")  # 400 characters, 798 bytes
    with pytest.raises(CsvError) as caught:
        count(f"a\n{row}".encode(), record_bytes=700)
    assert (caught.value.message, caught.value.line) == (RECORD_TOO_LONG.format(700), 2)


def test_blank_lines_before_the_header_are_no_part_of_its_record() -> None:
    assert count(b"\n" * 5000 + b"a\n1\n", record_bytes=100) == Summary(1, ",", ["a"])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (",".join(f"c{n}" for n in range(51)),
         "the header has 51 columns, more than MAX_COLUMNS (50); split the columns over several files, or raise "
         "MAX_COLUMNS"),
        ("a" + "," * 50, "the header has 51 columns, more than MAX_COLUMNS (50); split the columns over several files, "
                         "or raise MAX_COLUMNS"),
        ("id,x" + "n" * 256, "the name of column 2 is longer than MAX_COLUMN_NAME_BYTES (256 bytes); shorten it, or "
                             "raise MAX_COLUMN_NAME_BYTES"),
        ("id," + "é" * 129, "the name of column 2 is longer than MAX_COLUMN_NAME_BYTES (256 bytes); shorten it, or "
                            "raise MAX_COLUMN_NAME_BYTES"),
        ("id,_row,_error", "the header names _row, _error, which the failed-rows download (GET /uploads/{id}/failed) "
                           "adds to every row; rename the column"),
        (" _attempts ,b", "the header names _attempts, which the failed-rows download (GET /uploads/{id}/failed) adds "
                          "to every row; rename the column"),
    ],
)
def test_a_header_over_the_limits_or_with_a_reserved_name_is_refused(header: str, message: str) -> None:
    with pytest.raises(CsvError) as caught:
        count(f"{header}\n1\n".encode())
    assert (caught.value.message, caught.value.line) == (message, 1)


def test_a_header_at_the_limits_is_read() -> None:
    names = [f"c{n}" for n in range(49)] + ["é" * 128]
    assert count(f"{','.join(names)}\n{',' * 49}1\n".encode()) == Summary(1, ",", names)
    assert count(b"id,_Row,row\n1,2,3\n").columns == ["id", "_Row", "row"]
