"""Event files: each format reads to the same BehaviourEvent dicts, and bad rows name path:line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import streams.readers as readers
from schemas import AvroCodec
from streams.errors import InputFileError, StreamsError
from streams.readers import (
    EventFileReader,
    ItemCatalogue,
    default_movielens_dir,
    detect_format,
    item_file_for,
    read_events,
    read_item_catalogue,
    sort_by_event_time,
)

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_public_surface_is_what_all_lists() -> None:
    defined_here = {
        name
        for name, value in vars(readers).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == readers.__name__
    }
    assert defined_here <= set(readers.__all__)
    assert all(hasattr(readers, name) for name in readers.__all__)


# --- MovieLens atomic files ----------------------------------------------------------------------


def test_inter_rows_become_rate_events_with_rating_as_weight(tmp_path: Path) -> None:
    path = write(tmp_path / "x.inter", INTER_HEADER + "196\t242\t3\t881250949\n186\t302\t4.5\t891717742.25\n")
    assert read_events(path) == [
        {
            "user_id": "196",
            "item_id": "242",
            "action": "rate",
            "event_time_ms": 881_250_949_000,
            "weight": 3.0,
            "event_id": None,
            "context": {},
        },
        {
            "user_id": "186",
            "item_id": "302",
            "action": "rate",
            "event_time_ms": 891_717_742_250,
            "weight": 4.5,
            "event_id": None,
            "context": {},
        },
    ]


def test_inter_columns_in_any_order_and_extra_columns_ignored(tmp_path: Path) -> None:
    header = "timestamp:float\tnote:token_seq\titem_id:token\tuser_id:token\n"
    path = write(tmp_path / "x.inter", header + "10\thello world\ti1\tu1\n\n")
    [event] = read_events(path)
    assert (event["user_id"], event["item_id"], event["event_time_ms"], event["weight"]) == (
        "u1",
        "i1",
        10_000,
        None,
    )


def test_movielens_100k_reads_whole_and_sorts(tmp_path: Path) -> None:
    data_dir = default_movielens_dir()
    if data_dir is None or not (data_dir / "ml-100k.inter").is_file():
        pytest.skip("MovieLens 100K not found (set MSLI_DATA_DIR)")
    events = read_events(data_dir / "ml-100k.inter")
    assert len(events) == 100_000
    assert len({e["user_id"] for e in events}) == 943
    assert len({e["item_id"] for e in events}) == 1_682
    times = [e["event_time_ms"] for e in events]
    assert times != sorted(times)  # the file is not in time order, so callers must sort
    ordered = sort_by_event_time(events)
    assert [e["event_time_ms"] for e in ordered] == sorted(times)

    catalogue = read_item_catalogue(item_file_for(data_dir / "ml-100k.inter") or "")
    assert len(catalogue.titles) == 1_682
    assert catalogue.title("1") == "Toy Story (1995)"
    assert catalogue.genres["1"] == ("Animation", "Children's", "Comedy")


def test_item_catalogue_titles_with_year_and_stand_in(tmp_path: Path) -> None:
    item = write(
        tmp_path / "m.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Comedy\n"
        "267\tunknown\tunknown\tunknown\n",
    )
    write(tmp_path / "m.inter", INTER_HEADER)
    assert item_file_for(tmp_path / "m.inter") == item
    assert item_file_for(tmp_path / "other.inter") is None
    catalogue = read_item_catalogue(item)
    assert catalogue == ItemCatalogue(
        titles={"1": "Toy Story (1995)", "267": "unknown"},
        genres={"1": ("Animation", "Comedy"), "267": ("unknown",)},
    )
    assert catalogue.title("404") == "item 404"


# --- JSONL and CSV -------------------------------------------------------------------------------


def test_jsonl_fields_defaults_and_timestamp_in_seconds(tmp_path: Path) -> None:
    lines = [
        {"user_id": "u1", "item_id": "i1", "action": "click", "event_time_ms": 1_700_000_000_123},
        {"user_id": "u2", "item_id": 7, "timestamp": 1_700_000_001.5, "weight": 0.25, "extra": [1]},
        {
            "user_id": "u3",
            "item_id": "i3",
            "action": "purchase",
            "event_time_ms": 5,
            "event_id": "e-3",
            "context": {"device": "ios", "ab": 2, "new": True},
        },
    ]
    path = write(tmp_path / "e.jsonl", "\n".join(json.dumps(line) for line in lines) + "\n\n")
    events = read_events(path)
    assert events[0]["action"] == "click" and events[0]["event_time_ms"] == 1_700_000_000_123
    assert events[1]["action"] == "other"  # the default when absent
    assert (events[1]["item_id"], events[1]["event_time_ms"], events[1]["weight"]) == (
        "7",
        1_700_000_001_500,
        0.25,
    )
    assert events[2]["event_id"] == "e-3"
    assert events[2]["context"] == {"device": "ios", "ab": "2", "new": "true"}


def test_csv_with_header_blank_optionals_and_json_context(tmp_path: Path) -> None:
    path = write(
        tmp_path / "e.csv",
        " user_id , item_id,action,event_time_ms,weight,event_id,context\n"
        'u1,i1,view,1000,0.5,e1,"{""device"": ""web""}"\n'
        "u2,i2,,2000,,,\n"
        ",,,,,,\n",
    )
    assert read_events(path) == [
        {
            "user_id": "u1",
            "item_id": "i1",
            "action": "view",
            "event_time_ms": 1000,
            "weight": 0.5,
            "event_id": "e1",
            "context": {"device": "web"},
        },
        {
            "user_id": "u2",
            "item_id": "i2",
            "action": "other",
            "event_time_ms": 2000,
            "weight": None,
            "event_id": None,
            "context": {},
        },
    ]


def test_every_format_gives_records_the_codec_accepts(tmp_path: Path) -> None:
    codec = AvroCodec("BehaviourEvent")
    inter = write(tmp_path / "a.inter", INTER_HEADER + "1\t2\t5\t100\n")
    jsonl = write(
        tmp_path / "a.jsonl", '{"user_id": "1", "item_id": "2", "event_time_ms": 3, "context": {"k": "v"}}\n'
    )
    csv_ = write(tmp_path / "a.csv", "user_id,item_id,timestamp\n1,2,3\n")
    for path in (inter, jsonl, csv_):
        for event in read_events(path):
            assert codec.decode(codec.encode(event))["user_id"] == event["user_id"]


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.inter", "inter"),
        ("a.jsonl", "jsonl"),
        ("a.JSON", "jsonl"),
        ("a.csv", "csv"),
        ("a.jsonl.gz", "jsonl"),
    ],
)
def test_format_from_extension(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_explicit_format_wins_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "events.txt", "user_id,item_id,event_time_ms\nu,i,1\n")
    with pytest.raises(
        InputFileError, match=r"events\.txt: cannot tell the format from the extension '\.txt'"
    ):
        read_events(path)
    assert read_events(path, "csv")[0]["user_id"] == "u"
    with pytest.raises(InputFileError, match="unknown format 'xml'"):
        read_events(path, "xml")


def test_gzipped_files_are_read(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"user_id": "u", "item_id": "i", "event_time_ms": 1}\n')
    assert read_events(path)[0]["item_id"] == "i"


# --- bad input -----------------------------------------------------------------------------------

GOOD = {"user_id": "u", "item_id": "i", "action": "view", "event_time_ms": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_id": None}, "missing user_id"),
        ({"user_id": "  "}, "empty user_id"),
        ({"user_id": "a\x00b"}, "user_id contains a NUL character"),
        ({"item_id": 1.5}, "item_id must be a string, not float"),
        ({"action": "buy"}, "unknown action 'buy'; known: other, view"),
        ({"event_time_ms": None}, r"missing event_time_ms \(or timestamp in seconds\)"),
        ({"event_time_ms": -5}, "event time -5 is negative"),
        ({"event_time_ms": "soon"}, "event_time_ms is not a number: 'soon'"),
        ({"event_time_ms": 1.5}, "event_time_ms must be whole milliseconds"),
        ({"event_time_ms": True}, "event_time_ms must be a number, not bool"),
        ({"weight": "NaN"}, "weight must be finite"),
        ({"context": {"k": {"nested": 1}}}, r"context\['k'\] must be a string, not dict"),
        ({"context": ["a"]}, "context must be an object of strings, not list"),
    ],
)
def test_bad_jsonl_rows_raise_one_line_path_line_errors(tmp_path: Path, change: dict, message: str) -> None:
    row = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = write(tmp_path / "e.jsonl", json.dumps(GOOD) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(InputFileError, match=rf"^{tmp_path}/e\.jsonl:3: {message}") as info:
        read_events(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, StreamsError)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("u\ti\tfive\t1", "rating is not a number: 'five'"),
        ("u\ti\t5", "expected 4 tab-separated fields, found 3"),
        ("u\ti\t5\t-1", "event time '-1' is negative"),
        ("\ti\t5\t1", "empty user_id"),
    ],
)
def test_bad_inter_rows(tmp_path: Path, row: str, message: str) -> None:
    path = write(tmp_path / "x.inter", INTER_HEADER + row + "\n")
    with pytest.raises(InputFileError, match=rf"x\.inter:2: {message}"):
        read_events(path)


def test_bad_json_and_bad_csv_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", '{"user_id": "u",\n[1, 2]\n')
    with pytest.raises(InputFileError, match=r"e\.jsonl:1: not valid JSON: .* \(column \d+\)$"):
        read_events(path)
    reader = EventFileReader(path, on_error="skip")
    assert list(reader) == [] and reader.rows_skipped == 2
    assert reader.errors[1] == f"{path}:2: expected one JSON object per line, found list"
    path = write(tmp_path / "e.csv", "user_id,item_id,event_time_ms\nu,i,1\nu,i,1,extra\n")
    with pytest.raises(InputFileError, match=r"e\.csv:3: more fields than the header's 3"):
        read_events(path)


def test_bad_headers_raise_even_when_skipping(tmp_path: Path) -> None:
    inter = write(tmp_path / "x.inter", "user_id:token\trating:float\n1\t2\n")
    with pytest.raises(InputFileError, match=r"x\.inter:1: header lacks item_id, timestamp"):
        read_events(inter, on_error="skip")
    csv_ = write(tmp_path / "x.csv", "user,item,time\n1,2,3\n")
    with pytest.raises(InputFileError, match=r"x\.csv:1: header needs user_id, item_id and event_time_ms"):
        read_events(csv_, on_error="skip")


def test_skip_mode_counts_bad_rows_and_keeps_their_messages(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "action": "nope"}, GOOD, {**GOOD, "event_time_ms": -1}, {**GOOD, "user_id": ""}]
    path = write(tmp_path / "e.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    reader = EventFileReader(path, on_error="skip", keep_errors=1)
    events = list(reader)
    assert len(events) == reader.rows_read == 2
    assert reader.rows_skipped == 3
    assert reader.errors == [f"{path}:2: unknown action 'nope'; known: " + ", ".join(readers.ACTIONS)]
    assert len(read_events(path, on_error="skip")) == 2


def test_missing_file_and_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope\.csv: No such file or directory$"):
        read_events(tmp_path / "nope.csv")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"user_id": "u", "item_id": "i", "event_time_ms": 1}\n{"user_id": "\xe9"}\n')
    with pytest.raises(InputFileError, match=r"latin1\.jsonl: unreadable after line \d+: UnicodeDecodeError"):
        read_events(path)
    with pytest.raises(ValueError, match="on_error must be"):
        EventFileReader(path, on_error="ignore")  # type: ignore[arg-type]


# --- ordering and the data directory -------------------------------------------------------------


def test_sort_by_event_time_is_stable() -> None:
    events = [{"event_time_ms": t, "n": n} for n, t in enumerate([3, 1, 3, 2, 1])]
    assert [e["n"] for e in sort_by_event_time(events)] == [1, 4, 3, 0, 2]


def test_default_movielens_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSLI_DATA_DIR", str(tmp_path))
    assert default_movielens_dir() == tmp_path.resolve()
    monkeypatch.setenv("MSLI_DATA_DIR", str(tmp_path / "absent"))
    assert default_movielens_dir() is None
