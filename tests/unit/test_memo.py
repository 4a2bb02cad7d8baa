"""billing.memo: the hot paths' per-process memos stay bounded."""

from __future__ import annotations

from billing.memo import Memo


def test_a_full_memo_lets_its_oldest_entry_go_for_a_new_one() -> None:
    memo: Memo[str, int] = Memo(3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        assert memo.keep(key, value) == value
    memo.keep("d", 4)
    assert dict(memo) == {"b": 2, "c": 3, "d": 4}


def test_keeping_a_known_key_again_lets_nothing_go() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.keep("a", 1)
    memo.keep("b", 2)
    memo.keep("b", 20)
    assert dict(memo) == {"a": 1, "b": 20}
