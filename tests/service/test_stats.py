"""The pure folding of XINFO replies into /events/stats and /health/detailed."""

from __future__ import annotations

from service.stats import StreamInfo, fold_health, fold_stats

INFO = {
    "length": 2,
    "first-entry": ("1-0", {"type": "a.b"}),
    "last-entry": ("2-0", {"type": "c.d"}),
    "last-generated-id": "2-0",
    "entries-added": 5,
}
GROUPS = [
    {"name": "g1", "consumers": 2, "pending": 1, "last-delivered-id": "1-0", "lag": 1},
    {"name": "g2", "consumers": 0, "pending": 0, "last-delivered-id": "0-0", "lag": 2},
]


def test_stats_fold_each_stream_and_group() -> None:
    stats = fold_stats([StreamInfo("s", INFO, GROUPS), StreamInfo("t", None)], 3, "now")
    assert stats["dead_letters"] == 3
    assert stats["timestamp"] == "now"
    assert stats["streams"]["s"] == {
        "exists": True,
        "length": 2,
        "first_entry": {"id": "1-0", "fields": {"type": "a.b"}},
        "last_entry": {"id": "2-0", "fields": {"type": "c.d"}},
        "last_generated_id": "2-0",
        "entries_added": 5,
        "consumer_groups": ["g1", "g2"],
        "groups": [
            {"name": "g1", "consumers": 2, "pending": 1, "last_delivered_id": "1-0", "lag": 1},
            {"name": "g2", "consumers": 0, "pending": 0, "last_delivered_id": "0-0", "lag": 2},
        ],
    }
    assert stats["streams"]["t"]["exists"] is False
    assert stats["streams"]["t"]["consumer_groups"] == []


def test_health_is_up_when_every_group_is_there() -> None:
    health = fold_health([StreamInfo("s", INFO, GROUPS)], {"s": ["g1", "g2"]}, 0.1234)
    assert health == {
        "status": "up",
        "latency_ms": 0.123,
        "streams": {"s": {"length": 2, "consumers": 2, "groups": ["g1", "g2"]}},
    }


def test_health_is_degraded_and_says_what_is_missing() -> None:
    health = fold_health(
        [StreamInfo("s", INFO, GROUPS), StreamInfo("t", None)],
        {"s": ["g1", "g3"], "t": ["g1"]},
        1.0,
    )
    assert health["status"] == "degraded"
    assert health["missing"] == ["group s/g3", "stream t"]
