"""ItemVocabulary: stable hashing, explicit rows with OOV, JSON round trip."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from encoders import EncoderError, ItemVocabulary
from encoders.vocab import OOV_ROW, PAD_ROW


def test_hashing_is_pinned():
    # Hard-coded on purpose: these rows must never change, or stored vectors stop matching items.
    vocab = ItemVocabulary.hashing(2**15)
    assert vocab.row("item-42") == 14129
    assert vocab.row("42") == 20524
    assert ItemVocabulary.hashing(1000).row("Ünïcode ☃") == 785


def test_hashing_agrees_across_processes():
    # Python's own hash() is salted per process; the vocabulary must not depend on it.
    code = "from encoders import ItemVocabulary; print(ItemVocabulary.hashing(2**15).row('item-42'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == ItemVocabulary.hashing(2**15).row("item-42")


def test_hashing_never_uses_the_padding_row():
    vocab = ItemVocabulary.hashing(3)
    rows = vocab.rows(f"i{k}" for k in range(500))
    assert rows.dtype == np.int64 and rows.shape == (500,)
    assert set(rows.tolist()) == {1, 2}
    assert PAD_ROW not in rows


def test_hashed_rows_stay_the_same_past_the_memory_of_recent_ids_and_in_a_copy(monkeypatch):
    ids = [f"i{k}" for k in range(50)]
    expected = ItemVocabulary.hashing(2**15).rows(ids).tolist()
    monkeypatch.setattr("encoders.vocab._HASH_CACHE_SIZE", 8)  # cleared several times over
    vocab = ItemVocabulary.hashing(2**15)
    assert vocab.rows(ids).tolist() == expected
    assert vocab.rows(iter(ids)).tolist() == expected  # an iterator too, and every id remembered
    copy = pickle.loads(pickle.dumps(vocab))  # starts with nothing remembered
    assert copy == vocab and copy.rows(ids[::-1]).tolist() == expected[::-1]
    assert [vocab.row(i) for i in ids] == expected


def test_explicit_rows_and_oov():
    vocab = ItemVocabulary.explicit(["a", "b", "c"])
    assert vocab.mode == "explicit" and vocab.n_rows == 5
    assert vocab.rows(["a", "b", "c", "zzz"]).tolist() == [2, 3, 4, OOV_ROW]
    with pytest.raises(EncoderError, match="twice"):
        ItemVocabulary.explicit(["a", "a"])


@pytest.mark.parametrize("vocab", [ItemVocabulary.hashing(64), ItemVocabulary.explicit(["x", "ÿ", "z z"])])
def test_json_round_trip(vocab):
    text = vocab.to_json()
    back = ItemVocabulary.from_json(text)
    assert back == vocab and back.to_json() == text and back.n_rows == vocab.n_rows


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": 2, "mode": "hash"}',
        '{"format": 1, "mode": "hash", "hash": "crc32", "n_buckets": 8}',
        '{"format": 1, "mode": "explicit"}',
        '{"format": 1, "mode": "bloom"}',
    ],
)
def test_bad_json_is_refused(text):
    with pytest.raises(EncoderError):
        ItemVocabulary.from_json(text)
