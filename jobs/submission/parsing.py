"""Parsing pasted text and uploaded files into lists of URLs that remember their source lines.

No URL is checked here: `validation.validate_submission()` does that, naming
the source line of each bad URL.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

from jobs.exceptions import SubmissionError

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class UrlLines(list[str]):
    """URLs parsed from text; `line_numbers[i]` is the 1-based source line of URL i.

    A plain list of strings everywhere, except that `validate_submission()`
    uses the line numbers to name the line of each bad URL. Treat it as
    read-only: appending would leave the line numbers behind.
    """

    def __init__(self, numbered: Iterable[tuple[int, str]] = ()) -> None:
        pairs = list(numbered)
        super().__init__(url for _, url in pairs)
        self.line_numbers: list[int] = [line for line, _ in pairs]


def parse_url_lines(text: str) -> UrlLines:
    """Split pasted text into URLs, one per line.

    Surrounding whitespace is stripped; blank lines and lines starting with
    `#` are skipped. Each URL keeps its line number for error messages. No URL
    is checked here: `validate_submission()` does that.
    """
    numbered = []
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            numbered.append((number, line))
    return UrlLines(numbered)


def parse_url_csv(text: str) -> UrlLines:
    """Read URLs from CSV text: the column headed `url`, else the first column.

    A first row with a cell `url` (any case) is a header and is skipped.
    Blank rows and rows whose URL cell starts with `#` are skipped.
    Raises SubmissionError({"file": ...}) if the CSV cannot be read.
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    numbered: list[tuple[int, str]] = []
    column = 0
    header_checked = False
    last_line = 0
    try:
        for row in reader:
            # A quoted field may span lines: a row starts after the previous one ended.
            first_line, last_line = last_line + 1, reader.line_num
            cells = [cell.strip() for cell in row]
            if not header_checked and any(cells):
                header_checked = True
                header = [cell.lower() for cell in cells]
                if "url" in header:
                    column = header.index("url")
                    continue
            value = cells[column] if column < len(cells) else ""
            if value and not value.startswith("#"):
                numbered.append((first_line, value))
    except csv.Error as exc:
        raise SubmissionError({"file": f"line {reader.line_num}: unreadable CSV ({exc})"}) from exc
    return UrlLines(numbered)


def parse_url_file(data: bytes, *, filename: str = "") -> UrlLines:
    """Read URLs from an uploaded file: CSV if the name ends in .csv, else one per line.

    The file must be UTF-8 (a byte-order mark is allowed).
    Raises SubmissionError({"file": ...}) if it is not readable text.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SubmissionError({"file": f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"}) from exc
    if filename.lower().endswith(".csv"):
        return parse_url_csv(text)
    return parse_url_lines(text)
