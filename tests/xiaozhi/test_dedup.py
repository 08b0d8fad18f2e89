import pytest

from xiaozhi.dedup import RecentIds


def test_a_repeat_is_a_duplicate_and_none_never_is() -> None:
    recent = RecentIds(3)
    assert recent.seen("a") is False
    assert recent.seen("a") is True
    assert recent.seen(None) is False
    assert recent.seen(None) is False
    assert len(recent) == 1
    assert "a" in recent


def test_the_oldest_id_is_forgotten_past_capacity() -> None:
    recent = RecentIds(2)
    for message_id in ("a", "b", "c"):
        assert recent.seen(message_id) is False
    assert len(recent) == 2
    assert "a" not in recent
    assert recent.seen("a") is False  # forgotten, so delivered again
    assert recent.seen("c") is True


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RecentIds(0)
