"""User -> partition -> owning API: Kafka's murmur2 and the route table."""

from __future__ import annotations

import json

import pytest

from streams.routing import RouteTable, murmur2, partition_for


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # Apache Kafka's UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partition_is_the_positive_hash_modulo_partitions() -> None:
    assert partition_for("abc", 6) == 479470107 % 6
    assert partition_for("21", 6) == (-973932308 & 0x7FFFFFFF) % 6


def test_route_table_redirects_only_to_other_owners() -> None:
    me, other = "http://a:8080", "http://b:8080"
    table = RouteTable(partitions=2, own_url=me + "/")
    users = {partition_for(u, 2): u for u in (f"u{i}" for i in range(20))}
    assert table.owner(users[0]) is None  # no routes yet: answer locally
    table.update(
        {
            "route|0": json.dumps({"url": me}),
            "route|1": json.dumps({"url": other + "/"}),
            "route|9": "not json",
            "promoted-model": "m-1",
        }
    )
    assert table.owner(users[0]) is None
    assert table.owner(users[1]) == other
