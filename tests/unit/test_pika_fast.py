"""kubejob.pika_fast: every private part of pika it uses is there, it turns itself off where untested, and it
joins pika's waiting frames into fewer socket writes without changing a byte."""

import inspect
import logging

import pika
import pytest

from kubejob import pika_fast
from kubejob.pika_fast import joined


@pytest.mark.parametrize(("owner", "name", "kind", "where"), pika_fast.HOOKS,
                         ids=[f"{getattr(hook[0], '__name__', hook[0])}.{hook[1]}" for hook in pika_fast.HOOKS])
def test_every_private_part_of_pika_it_uses_is_there_as_expected(owner: object, name: str, kind: str,
                                                                  where: str) -> None:
    if kind == "instance attribute":  # set when an instance is made: read it there
        assert f"self.{name} = " in inspect.getsource(getattr(owner, where)), f"{owner}.{where} sets {name}"
    elif kind == "class":
        assert inspect.isclass(getattr(owner, name))
    elif kind == "class attribute":
        assert isinstance(getattr(owner, name), int)
    else:
        assert inspect.isfunction(getattr(owner, name)), f"{owner}.{name}"


def test_it_is_active_only_when_wanted_and_on_a_tested_pika(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    pika_fast._plain.cache_clear()
    assert pika.__version__ in pika_fast.TESTED_VERSIONS, "the pinned pika is one it was tested with"
    assert pika_fast.active(True)
    with caplog.at_level(logging.WARNING, logger="kubejob.pika_fast"):
        assert not pika_fast.active(False)
        assert not pika_fast.active(False)
        monkeypatch.setattr(pika, "__version__", "1.4.0")
        assert not pika_fast.active(True)
    reasons = [record.reason for record in caplog.records]
    assert reasons == ["KUBEJOB_PIKA_FAST is off", "pika 1.4.0 is not a version they were tested with (1.3.2)"]


def test_frames_are_joined_in_order_up_to_the_limit() -> None:
    assert list(joined([b"ab", b"cd", b"ef", b"g"], limit=4)) == [b"abcd", b"efg"]


def test_a_frame_larger_than_the_limit_goes_whole_and_alone() -> None:
    assert list(joined([b"a", b"bcdefg", b"h"], limit=4)) == [b"a", b"bcdefg", b"h"]


def test_the_bytes_are_unchanged() -> None:
    frames = [bytes([n]) * n for n in range(1, 200)]
    assert b"".join(joined(frames, limit=1000)) == b"".join(frames)
