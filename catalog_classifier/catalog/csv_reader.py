"""Permissive CSV/TSV reading: a broken record becomes one rejected row, never a stop or a loss.

Modelled on Spark's PERMISSIVE mode. The C ``csv`` module parses one record at a time from
a line source that remembers the physical lines each record took, so every record knows
its lines ("12" or "12-14"). A record is broken when it has another number of fields than
the header (a truncated row, an extra field, a row shifted by a missing field) or when a
structural field (id, price, image, brand, domain, url, category: ``strict`` columns) holds
a line break, or when its quoting is malformed (a quote never closed, text after a closing
quote: the csv module's strict mode). A broken record keeps only its first physical line, as a row with an error
and a bounded copy of that line; parsing resumes at the next physical line. So the rows an
unbalanced quote swallowed into one field come back as the normal rows they are, and a
legitimately quoted multi-line description still reads as one record.
"""
from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Iterator

from .cleaning import bounded_raw

# reserved columns a reader adds to every raw chunk (validate.py turns them into output)
LINES, ERROR, RAW = "__lines__", "__error__", "__raw__"
META_COLUMNS = (LINES, ERROR, RAW)
_FIELD_LIMIT = 1 << 30  # huge fields are read (then capped by cleaning), not a parse error

StrictColumns = Callable[[list[str]], Iterable[str]] | None


class _Lines:
    """Physical lines with push-back; ``taken`` holds the lines of the record being parsed."""

    def __init__(self, fh):
        self.fh = fh
        self.back: list[str] = []  # pushed-back lines, last one first out
        self.taken: list[str] = []
        self.next_no = 1  # physical number of the next line handed out
        self.read = 0  # physical lines read from the file (push-back does not count twice)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.back:
            line = self.back.pop()
        else:
            line = next(self.fh)
            self.read += 1
        self.taken.append(line)
        self.next_no += 1
        return line

    def push_back(self, lines: list[str]) -> None:
        self.back.extend(reversed(lines))
        self.next_no -= len(lines)


def _mangle(header: list[str]) -> list[str]:
    """Duplicate column names as pandas reads them: a, a.1, a.2."""
    seen: dict[str, int] = {}
    out = []
    for name in header:
        if name in seen:
            seen[name] += 1
            out.append(f"{name}.{seen[name]}")
        else:
            seen[name] = 0
            out.append(name)
    return out


def _line_span(first: int, n: int) -> str:
    return str(first) if n <= 1 else f"{first}-{first + n - 1}"


class CsvRecords:
    """Iterate (fields or None, lines, error, raw) over a CSV text stream, after its header."""

    def __init__(self, fh, sep: str, strict: StrictColumns = None):
        if csv.field_size_limit() < _FIELD_LIMIT:
            csv.field_size_limit(min(_FIELD_LIMIT, sys.maxsize))
        self.src = _Lines(fh)
        self.reader = csv.reader(self.src, delimiter=sep, strict=True)
        self.header: list[str] = []
        for rec in self.reader:  # leading blank lines are not a header
            if rec:
                self.header = _mangle(rec)
                break
        self.src.taken = []
        names = set(strict(self.header)) if strict is not None else set()
        self.strict_idx = [j for j, c in enumerate(self.header) if c in names]
        self.records = 0  # records parsed (good and broken); blank lines are not records

    @property
    def lines_read(self) -> int:
        return self.src.read

    def __iter__(self) -> Iterator[tuple[list[str] | None, str, str | None, str | None]]:
        src, ncol = self.src, len(self.header)
        while True:
            first = src.next_no
            try:
                rec: list[str] | None = next(self.reader)
                error = None
            except StopIteration:
                return
            except csv.Error as e:
                rec, error = None, f"malformed CSV record: {e}"
            lines, src.taken = src.taken, []
            if rec == [] and error is None:
                continue  # a blank line
            if error is None and len(rec) != ncol:
                error = f"malformed CSV record: {len(rec)} fields, the header has {ncol}"
            if error is None and len(lines) > 1:
                broken = next((self.header[j] for j in self.strict_idx
                               if "\n" in rec[j] or "\r" in rec[j]), None)
                if broken is not None:
                    error = f"malformed CSV record: line break inside field {broken!r}"
            self.records += 1
            if error is None:
                yield rec, _line_span(first, len(lines)), None, None
                continue
            if len(lines) > 1:
                src.push_back(lines[1:])
            yield None, str(first), f"{error} (line {first})", bounded_raw(lines[0].rstrip("\r\n"))
