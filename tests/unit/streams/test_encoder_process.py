"""An encoder process gives the parent's vectors bit for bit, its errors, and fails loudly once gone."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from segment_samples import random_segments

from encoders import EncoderError, SegmentBatchEncoder, SegmentInput
from streams.encoder_process import EncoderProcess, EncoderProcessError


@pytest.fixture(scope="module")
def encoder() -> SegmentBatchEncoder:
    return SegmentBatchEncoder.untrained(seed=0, device="cpu")


@pytest.fixture(scope="module")
def process(encoder: SegmentBatchEncoder) -> Iterator[EncoderProcess]:
    child = EncoderProcess(encoder, torch_threads=1)
    yield child
    child.close()


def test_vectors_are_the_parents_bit_for_bit(encoder: SegmentBatchEncoder, process: EncoderProcess) -> None:
    batches = [random_segments(n, seed) for seed, n in enumerate([1, 64, 257])]
    results = [process.start_encoding(batch) for batch in batches]  # all three in flight at once
    for batch, result in zip(batches, results, strict=True):
        vectors = result()
        assert vectors.dtype == np.float32 and vectors.shape == (len(batch), encoder.dim)
        assert vectors.tobytes() == encoder.encode(batch).tobytes()
    assert process.model_version == encoder.model_version and process.dim == encoder.dim


def test_a_bad_segment_is_refused_as_in_process_and_the_child_goes_on(
    encoder: SegmentBatchEncoder, process: EncoderProcess
) -> None:
    bad = SegmentInput(item_ids=["a"], actions=[99], event_times_ms=[1], weights=[None])
    with pytest.raises(EncoderError) as in_process:
        encoder.encode([bad])
    with pytest.raises(EncoderError) as in_child:
        process.encode([bad])
    assert str(in_child.value) == str(in_process.value) == "segment 0: action outside 0..9"
    good = random_segments(5, seed=9)
    assert process.encode(good).tobytes() == encoder.encode(good).tobytes()


def test_an_error_in_the_child_reaches_the_parent_and_the_child_goes_on(
    encoder: SegmentBatchEncoder, process: EncoderProcess
) -> None:
    inputs = encoder.inputs(random_segments(3, seed=4))
    beyond_the_table = inputs._replace(rows=inputs.rows + encoder.config.n_item_buckets)
    with pytest.raises(IndexError, match="index out of range"):
        process._send(beyond_the_table, None)()  # inputs() never makes these: the child's own error
    good = random_segments(5, seed=9)
    assert process.encode(good).tobytes() == encoder.encode(good).tobytes()


def test_a_dead_child_fails_what_it_held_and_every_later_batch(encoder: SegmentBatchEncoder) -> None:
    child = EncoderProcess(encoder, torch_threads=1)
    assert child.encode(random_segments(2, seed=1)).shape == (2, encoder.dim)  # started and answering
    child._process.kill()
    deadline = time.monotonic() + 30
    while child._gone is None and time.monotonic() < deadline:  # the reader sees the pipe close
        time.sleep(0.01)
    with pytest.raises(EncoderProcessError, match=r"the encoder process exited \(signal 9\)"):
        child.encode(random_segments(2, seed=2))
    child.close()
    child.close()  # twice is fine


def test_only_a_cpu_encoder_runs_in_a_process() -> None:
    class OnAGpu:
        device = type("Device", (), {"type": "cuda"})()

    with pytest.raises(EncoderProcessError, match="CPU encoders"):
        EncoderProcess(OnAGpu(), torch_threads=1)  # type: ignore[arg-type]


def test_a_child_that_fails_to_start_is_an_error_not_a_hang(encoder: SegmentBatchEncoder) -> None:
    with pytest.raises(EncoderProcessError, match=r"did not start \(status 1"):
        EncoderProcess(encoder, torch_threads=-1)  # torch refuses it in the child, before the weights
