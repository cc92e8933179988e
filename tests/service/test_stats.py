"""The pure folding of XINFO replies into /events/stats and /health/detailed."""

from __future__ import annotations

import json

import pytest

from service.core.stream_stats import StreamInfo, fold_group, fold_health, fold_stats

INFO = {
    "length": 2,
    "first-entry": ("1-0", {"type": "a.b"}),
    "last-entry": ("2-0", {"type": "c.d"}),
    "last-generated-id": "2-0",
}
GROUPS = [
    {"name": "g1", "consumers": 2, "pending": 1, "last-delivered-id": "1-0", "lag": 1},
    {"name": "g2", "consumers": 0, "pending": 0, "last-delivered-id": "0-0", "lag": 2},
]
RAW = b"\xff\xfe".decode("utf-8", "surrogateescape")


def test_stats_fold_each_stream_and_group() -> None:
    stats = fold_stats([StreamInfo("s", INFO, GROUPS), StreamInfo("t", None)], 3, 2, "now")
    assert stats["dead_letters"] == 3
    assert stats["waiting_retries"] == 2
    assert stats["timestamp"] == "now"
    assert stats["streams"]["s"] == {
        "exists": True,
        "length": 2,
        "first_entry": "1-0",
        "last_entry": "2-0",
        "first_entry_detail": {"id": "1-0", "fields": {"type": "a.b"}},
        "last_entry_detail": {"id": "2-0", "fields": {"type": "c.d"}},
        "last_generated_id": "2-0",
        "consumer_groups": ["g1", "g2"],
        "entries_added": 0,
        "groups": [
            {
                "name": "g1",
                "consumers": 2,
                "pending": 1,
                "last_delivered_id": "1-0",
                "entries_read": None,
                "lag": 1,
                "lag_known": True,
                "missed_entries": False,
            },
            {
                "name": "g2",
                "consumers": 0,
                "pending": 0,
                "last_delivered_id": "0-0",
                "entries_read": None,
                "lag": 2,
                "lag_known": True,
                "missed_entries": False,
            },
        ],
    }
    assert stats["streams"]["t"]["exists"] is False
    assert stats["streams"]["t"]["consumer_groups"] == []


def test_health_is_up_when_every_group_is_there() -> None:
    health = fold_health([StreamInfo("s", INFO, GROUPS)], {"s": ["g1", "g2"]}, 0.1234)
    assert health == {
        "status": "up",
        "latency_ms": 0.123,
        "fanout": "running",
        "streams": {
            "s": {"length": 2, "consumers": 2, "connected_consumers": 2, "groups": ["g1", "g2"]}
        },
    }


def test_health_is_degraded_and_says_what_is_missing() -> None:
    health = fold_health(
        [StreamInfo("s", INFO, GROUPS), StreamInfo("t", None)],
        {"s": ["g1", "g3"], "t": ["g1"]},
        1.0,
    )
    assert health["status"] == "degraded"
    assert health["missing"] == ["group s/g3", "stream t"]


def test_health_is_degraded_while_the_fanout_reader_restarts() -> None:
    health = fold_health([StreamInfo("s", INFO, GROUPS)], {"s": ["g1"]}, 1.0, False)
    assert health["status"] == "degraded"
    assert health["fanout"] == "restarting"


# As Redis 7.0 answers after XTRIM MAXLEN 5 of entries 1-0..10-0: a group that never read
# lost five entries, yet its lag says 5; one that read five before the trim lost nothing.
TRIMMED = {
    "length": 5,
    "entries-added": 10,
    "first-entry": ("6-0", {"k": "v"}),
    "last-entry": ("10-0", {"k": "v"}),
    "last-generated-id": "10-0",
}


@pytest.mark.parametrize(
    ("group", "missed"),
    [
        ({"last-delivered-id": "0-0", "entries-read": None, "lag": 5}, True),
        ({"last-delivered-id": "5-0", "entries-read": 5, "lag": 5}, False),
        ({"last-delivered-id": "3-0", "entries-read": 3, "lag": None}, True),
        ({"last-delivered-id": "8-0", "entries-read": 8, "lag": 2}, False),
    ],
)
def test_groups_behind_the_trim_are_flagged(group: dict[str, object], missed: bool) -> None:
    folded = fold_group({"name": "observer", **group}, TRIMMED)
    assert folded["missed_entries"] is missed
    assert folded["lag"] == group["lag"]
    assert folded["lag_known"] is (group["lag"] is not None)


def test_a_group_delivered_the_newest_entry_has_no_lag_whatever_redis_says() -> None:
    # A promoted replica's lag after a failover: entries-read was never passed on to it.
    garbled = {"last-delivered-id": "10-0", "entries-read": 3, "lag": 11_555}
    folded = fold_group({"name": "lightrag-workers", **garbled}, TRIMMED)
    assert (folded["lag"], folded["lag_known"], folded["missed_entries"]) == (0, True, False)


def test_bytes_that_are_not_utf8_are_shown_escaped() -> None:
    info = {**INFO, "first-entry": ("1-0", {RAW: RAW}), "last-entry": ("2-0", {"data": RAW})}
    groups = [{**GROUPS[0], "name": RAW}]
    document = {
        "stats": fold_stats([StreamInfo("s", info, groups)], 0, 0, "now"),
        "health": fold_health([StreamInfo("s", info, groups)], {"s": []}, 1.0),
    }
    text = json.dumps(document, ensure_ascii=False)
    text.encode("utf-8")
    stream = document["stats"]["streams"]["s"]
    assert stream["first_entry_detail"]["fields"] == {"\\xff\\xfe": "\\xff\\xfe"}
    assert stream["groups"][0]["name"] == "\\xff\\xfe"


def test_health_counts_groups_as_consumers_as_the_original_did_and_connections_apart() -> None:
    groups = [
        {"name": "g1", "consumers": 3, "pending": 0},
        {"name": "g2", "consumers": 4, "pending": 0},
        {"name": "g3", "consumers": 0, "pending": 0},
    ]
    health = fold_health([StreamInfo("s", INFO, groups)], {"s": ["g1"]}, 0.1)
    assert health["streams"]["s"]["consumers"] == 3
    assert health["streams"]["s"]["connected_consumers"] == 7
