"""Parsing pasted text and uploaded files into URL lists (jobs/submission/parsing.py)."""

from __future__ import annotations

import pytest

from jobs.exceptions import SubmissionError
from jobs.submission.parsing import parse_url_csv, parse_url_file, parse_url_lines

# --- parsing ----------------------------------------------------------------------------


def test_parse_url_lines_skips_blanks_and_comments_and_keeps_line_numbers() -> None:
    text = "# my list\n\n  https://a.example/  \r\nhttp://b.example/x\r\n\t\n#http://skipped/\nftp://c.example/"
    urls = parse_url_lines(text)
    assert urls == ["https://a.example/", "http://b.example/x", "ftp://c.example/"]
    assert urls.line_numbers == [3, 4, 7]


def test_csv_uses_url_column_and_reports_start_lines() -> None:
    text = 'name,URL\nfirst,http://a.example/\n\n"two\nlines",http://b.example/\nc,#skipped\nd,ftp://d.example/\n'
    urls = parse_url_csv(text)
    assert urls == ["http://a.example/", "http://b.example/", "ftp://d.example/"]
    assert urls.line_numbers == [2, 4, 7]


def test_csv_without_header_uses_first_column() -> None:
    urls = parse_url_file(b"http://a.example/,200\nhttp://b.example/,404\n", filename="LIST.CSV")
    assert urls == ["http://a.example/", "http://b.example/"]
    assert urls.line_numbers == [1, 2]


def test_text_file_with_bom_and_mixed_line_endings() -> None:
    urls = parse_url_file(b"\xef\xbb\xbfhttp://a.example/\r\nhttp://b.example/\rhttp://c.example/\n", filename="x.txt")
    assert urls == ["http://a.example/", "http://b.example/", "http://c.example/"]
    assert urls.line_numbers == [1, 2, 3]


def test_file_that_is_not_utf8_names_the_line() -> None:
    with pytest.raises(SubmissionError) as info:
        parse_url_file(b"http://a.example/\nhttp://b.example/\xff\n")
    assert info.value.errors == {"file": "line 2: not UTF-8 text (byte 0xff)"}
