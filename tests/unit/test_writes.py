"""Joining pika's waiting frames into fewer socket writes (producer.writes)."""

from producer.writes import joined


def test_frames_are_joined_in_order_up_to_the_limit() -> None:
    assert list(joined([b"ab", b"cd", b"ef", b"g"], limit=4)) == [b"abcd", b"efg"]


def test_a_frame_larger_than_the_limit_goes_whole_and_alone() -> None:
    assert list(joined([b"a", b"bcdefg", b"h"], limit=4)) == [b"a", b"bcdefg", b"h"]


def test_the_bytes_are_unchanged() -> None:
    frames = [bytes([n]) * n for n in range(1, 200)]
    assert b"".join(joined(frames, limit=1000)) == b"".join(frames)
