"""Read behaviour events from files (MovieLens atomic files, JSONL, CSV) into BehaviourEvent dicts.

Every format goes through one validator, so `msli produce` refuses the same bad rows whatever the
file type, with a one-line `path:line: what is wrong` that a user can fix in an editor.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from schemas import ACTIONS
from streams.errors import InputFileError

__all__ = [
    "FORMATS",
    "EventFileReader",
    "ItemCatalogue",
    "default_movielens_dir",
    "detect_format",
    "item_file_for",
    "read_events",
    "read_item_catalogue",
    "sort_by_event_time",
]

FORMATS: tuple[str, ...] = ("inter", "jsonl", "csv")
_SUFFIX_FORMATS = {".inter": "inter", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_ACTIONS = frozenset(ACTIONS)
_FIELDS = ("user_id", "item_id", "action", "event_time_ms", "timestamp", "weight", "event_id", "context")
_MAX_SHOWN = 40  # characters of an offending value quoted in an error message
OnError = Literal["raise", "skip"]


class _RowError(ValueError):
    """What is wrong with one row; the reader adds `path:line`."""


class _HeaderError(ValueError):
    """The header is unusable, so no row can be read."""


def default_movielens_dir() -> Path | None:
    """Return the MovieLens directory (`MSLI_DATA_DIR` or ../shared/data next to the repo), if present.

    The data is never copied into the repository, so callers must cope with it being absent.
    """
    repo = Path(__file__).resolve().parent.parent
    path = Path(
        os.environ.get("MSLI_DATA_DIR") or repo.parent / "shared" / "data" / "movielens-100k"
    ).resolve()
    return path if path.is_dir() else None


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    """Return the file's format: `fmt` if given, else from the extension (a trailing .gz is looked past)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise InputFileError(f"{path}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix == ".gz" else p.suffix
    try:
        return _SUFFIX_FORMATS[suffix.lower()]
    except KeyError:
        raise InputFileError(
            f"{path}: cannot tell the format from the extension {suffix!r}; "
            f"name it .inter, .jsonl or .csv, or pass the format ({', '.join(FORMATS)})"
        ) from None


class EventFileReader:
    """Iterate the events of one file lazily, counting the rows it read and the bad rows it skipped.

    With `on_error="raise"` the first bad row raises InputFileError; with `"skip"` bad rows are
    counted in `rows_skipped` and their messages kept (the first `keep_errors`) in `errors`, so a
    producer can load what is good and still report what is not. A bad header always raises:
    skipping it would skip the whole file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str | None = None,
        *,
        on_error: OnError = "raise",
        keep_errors: int = 10,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        self.path = Path(path)
        self.format = detect_format(self.path, fmt)
        self.on_error = on_error
        self.keep_errors = keep_errors
        self.rows_read = 0  # events yielded
        self.rows_skipped = 0
        self.errors: list[str] = []  # the first `keep_errors` messages of skipped rows

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rows = {"inter": _inter_rows, "jsonl": _jsonl_rows, "csv": _csv_rows}[self.format]
        line_no = 1
        try:
            with _open_text(self.path) as text:
                for line_no, parse in rows(text):
                    try:
                        event = parse()
                    except _RowError as exc:
                        self._bad_row(line_no, str(exc))
                        continue
                    self.rows_read += 1
                    yield event
        except _HeaderError as exc:
            raise InputFileError(f"{self.path}:1: {exc}") from None
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, csv.Error) as exc:
            # Raised while reading ahead, so the exact line is unknown; name the last good one.
            raise InputFileError(
                f"{self.path}: unreadable after line {line_no}: {type(exc).__name__}: {_one_line(exc)}"
            ) from None
        except OSError as exc:  # missing, a directory, no permission: say which, in the OS's words
            raise InputFileError(f"{self.path}: {exc.strerror or exc}") from None

    def _bad_row(self, line_no: int, message: str) -> None:
        text = f"{self.path}:{line_no}: {message}"
        if self.on_error == "raise":
            raise InputFileError(text)
        self.rows_skipped += 1
        if len(self.errors) < self.keep_errors:
            self.errors.append(text)


def read_events(
    path: str | os.PathLike[str], fmt: str | None = None, *, on_error: OnError = "raise"
) -> list[dict[str, Any]]:
    """Read every event of a file, in file order; use EventFileReader to learn how many were skipped."""
    return list(EventFileReader(Path(path), fmt, on_error=on_error))


def sort_by_event_time(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order events by event time, keeping file order among equal times (MovieLens is not sorted)."""
    return sorted(events, key=lambda e: e["event_time_ms"])


# --- row sources: each yields (line number, a thunk that builds the event or raises _RowError) ---

_RowSource = Iterator[tuple[int, Callable[[], dict[str, Any]]]]


def _inter_rows(text: IO[str]) -> _RowSource:
    """RecBole atomic `.inter`: typed tab-separated header; rating is the weight of a `rate` event."""
    header = text.readline()
    columns = _atomic_header(header)
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in columns]
    if missing:
        raise _HeaderError(f"header lacks {', '.join(missing)} (it has: {', '.join(columns) or 'nothing'})")
    width = len(columns)
    user, item, ts = columns["user_id"], columns["item_id"], columns["timestamp"]
    rating, action = columns.get("rating"), columns.get("action")
    for line_no, line in enumerate(text, start=2):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        cells = line.split("\t")

        def parse(cells: list[str] = cells) -> dict[str, Any]:
            if len(cells) != width:
                raise _RowError(f"expected {width} tab-separated fields, found {len(cells)}")
            return _event(
                user_id=cells[user],
                item_id=cells[item],
                action=cells[action] if action is not None else "rate",
                event_time_ms=None,
                timestamp=cells[ts],
                weight=cells[rating] if rating is not None else None,
                weight_name="rating",
            )

        yield line_no, parse


def _jsonl_rows(text: IO[str]) -> _RowSource:
    """One JSON object per line; blank lines are allowed, unknown keys are ignored."""
    for line_no, line in enumerate(text, start=1):
        if not line.strip():
            continue

        def parse(line: str = line) -> dict[str, Any]:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _RowError(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise _RowError(f"expected one JSON object per line, found {type(obj).__name__}")
            fields: dict[str, Any] = {name: obj.get(name) for name in _FIELDS}
            return _event(**fields)

        yield line_no, parse


def _csv_rows(text: IO[str]) -> _RowSource:
    """CSV with a header of BehaviourEvent field names; `context`, if present, holds a JSON object."""
    reader = csv.DictReader(text)
    names = [n.strip() for n in (reader.fieldnames or [])]
    reader.fieldnames = names
    if "user_id" not in names or "item_id" not in names or not {"event_time_ms", "timestamp"} & set(names):
        raise _HeaderError(f"header needs user_id, item_id and event_time_ms (or timestamp); it has: {names}")
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue

        def parse(row: dict[str, Any] = row) -> dict[str, Any]:
            if None in row:
                raise _RowError(f"more fields than the header's {len(names)}")
            cells: dict[str, Any] = {k: v.strip() or None for k, v in row.items() if isinstance(v, str)}
            if cells.get("context") is not None:
                try:
                    cells["context"] = json.loads(cells["context"])
                except json.JSONDecodeError as exc:
                    raise _RowError(f"context is not a JSON object: {exc.msg}") from None
            fields: dict[str, Any] = {name: cells.get(name) for name in _FIELDS}
            return _event(**fields)

        yield reader.line_num, parse


# --- the one validator ---------------------------------------------------------------------------


def _event(
    *,
    user_id: Any,
    item_id: Any,
    action: Any,
    event_time_ms: Any,
    timestamp: Any,
    weight: Any,
    event_id: Any = None,
    context: Any = None,
    weight_name: str = "weight",
) -> dict[str, Any]:
    """Build a BehaviourEvent dict from loosely typed fields, or raise _RowError saying what is wrong."""
    return {  # checked in field order, so a row's first problem is the one reported
        "user_id": _identifier("user_id", user_id),
        "item_id": _identifier("item_id", item_id),
        "action": _action(action),
        "event_time_ms": _event_time(event_time_ms, timestamp),
        "weight": None if weight is None or weight == "" else _number(weight_name, weight),
        "event_id": None if event_id is None else _identifier("event_id", event_id),
        "context": _context(context),
    }


def _action(value: Any) -> str:
    if value is None:
        return "other"
    if not isinstance(value, str) or value.strip() not in _ACTIONS:
        raise _RowError(f"unknown action {_show(value)}; known: {', '.join(ACTIONS)}")
    return value.strip()


def _event_time(event_time_ms: Any, timestamp: Any) -> int:
    """Milliseconds from `event_time_ms`, else from `timestamp` in seconds (MovieLens, convenience)."""
    if event_time_ms is not None:
        given, ms = event_time_ms, _number("event_time_ms", event_time_ms)
        if ms != int(ms):
            raise _RowError(f"event_time_ms must be whole milliseconds, not {_show(event_time_ms)}")
    elif timestamp is not None:
        given, ms = timestamp, _number("timestamp", timestamp) * 1000
    else:
        raise _RowError("missing event_time_ms (or timestamp in seconds)")
    if not 0 <= ms < 2**63:
        raise _RowError(f"event time {_show(given)} is {'negative' if ms < 0 else 'beyond a 64-bit long'}")
    return round(ms)


def _identifier(name: str, value: Any) -> str:
    if value is None:
        raise _RowError(f"missing {name}")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise _RowError(f"{name} must be a string, not {type(value).__name__}")
    value = value.strip()
    if not value:
        raise _RowError(f"empty {name}")
    if "\x00" in value:  # the worker dead-letters these: a NUL would break the store's keys
        raise _RowError(f"{name} contains a NUL character")
    return value


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _RowError(f"{name} must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise _RowError(f"{name} is not a number: {_show(value)}") from None
    if not math.isfinite(number):
        raise _RowError(f"{name} must be finite, not {_show(value)}")
    return number


def _context(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _RowError(f"context must be an object of strings, not {type(value).__name__}")
    out: dict[str, str] = {}
    for key, v in value.items():
        if isinstance(v, str):
            out[str(key)] = v
        elif isinstance(v, int | float | bool):
            out[str(key)] = json.dumps(v)  # keep JSON spelling (true, 1.5) rather than Python's
        else:
            raise _RowError(f"context[{_show(key)}] must be a string, not {type(v).__name__}")
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _open_text(path: Path) -> IO[str]:
    """Open as UTF-8 text (gzip-aware); newline="" lets csv see quoted line breaks."""
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _atomic_header(header: str) -> dict[str, int]:
    """Map RecBole's typed header (`user_id:token\\titem_id:token ...`) to {name: column index}."""
    return {
        cell.split(":", 1)[0].strip(): i for i, cell in enumerate(header.rstrip("\r\n").split("\t")) if cell
    }


# --- MovieLens items, for printing titles --------------------------------------------------------


@dataclass(frozen=True)
class ItemCatalogue:
    """Titles and genres by item id, so the demo can print what a user watched."""

    titles: dict[str, str]  # item_id -> "Title (year)"
    genres: dict[str, tuple[str, ...]]  # item_id -> ("Animation", "Comedy", ...)

    def title(self, item_id: str) -> str:
        """Return the item's title, or a stand-in naming the id when the catalogue lacks it."""
        return self.titles.get(item_id, f"item {item_id}")


def item_file_for(inter_path: str | os.PathLike[str]) -> Path | None:
    """Return the `.item` file beside a `.inter` file (RecBole names them alike), if it exists."""
    candidate = Path(inter_path).with_suffix(".item")
    return candidate if candidate.is_file() else None


def read_item_catalogue(path: str | os.PathLike[str]) -> ItemCatalogue:
    """Read a RecBole `.item` file (item_id, movie_title, release_year, class) into an ItemCatalogue."""
    path = Path(path)
    titles: dict[str, str] = {}
    genres: dict[str, tuple[str, ...]] = {}
    try:
        with _open_text(path) as text:
            columns = _atomic_header(text.readline())
            if "item_id" not in columns:
                raise InputFileError(f"{path}:1: header lacks item_id (it has: {', '.join(columns)})")
            item, title = columns["item_id"], columns.get("movie_title", columns.get("title"))
            year, genre = columns.get("release_year"), columns.get("class", columns.get("genre"))
            for line_no, line in enumerate(text, start=2):
                cells = line.rstrip("\r\n").split("\t")
                if not line.strip():
                    continue
                if len(cells) != len(columns):
                    raise InputFileError(
                        f"{path}:{line_no}: expected {len(columns)} tab-separated fields, found {len(cells)}"
                    )
                item_id = cells[item].strip()
                name = cells[title].strip() if title is not None else f"item {item_id}"
                if year is not None and cells[year].strip().isdigit():
                    name = f"{name} ({cells[year].strip()})"
                titles[item_id] = name
                genres[item_id] = tuple(cells[genre].split()) if genre is not None else ()
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{path}: unreadable: {_one_line(exc)}") from None
    except OSError as exc:
        raise InputFileError(f"{path}: {exc.strerror or exc}") from None
    return ItemCatalogue(titles, genres)
