"""How often a BGSAVE's end is polled (issue 14: fixed overhead). Redis sees its child's end only at a serverCron
tick (~0.1 s at hz 10), so a small save ends at ~0.1 s: the poll must see it within a few ms, not at the next step
of a doubling backoff (5+10+20+40+80 ms: seen at ~0.16 s)."""

from clusterbak.redisops.bgsave import POLL, POLL_FIRST, poll_pause


def polled_at(ends_at: float) -> float:
    """When the poll loop first looks after a save that ends at `ends_at` seconds (round trips ignored)."""
    t = 0.0
    while t < ends_at:
        t += poll_pause(t)
    return t


def test_a_small_save_is_seen_within_ten_ms_of_its_end():
    for end in (0.02, 0.1, 0.2, 0.3):
        assert polled_at(end) - end <= 0.01 + 1e-9, end


def test_a_long_save_is_seen_within_a_tenth_of_its_time_and_polled_at_most_ten_times_a_second():
    assert polled_at(5.0) - 5.0 <= 0.5
    assert polled_at(60.0) - 60.0 <= POLL + 1e-9
    assert poll_pause(3600.0) == POLL
    assert poll_pause(0.0) == POLL_FIRST
