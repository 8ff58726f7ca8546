"""The test oracle: what a worker must end with, computed plainly from the event log and the rules.

Independent of the worker's code on purpose (it shares only the Avro schemas and the encoder, the
model under test elsewhere), so the reliability tests compare two implementations, not one with
itself. `closing` holds the closing rules, `merge` the store's merge rules, `expected` the whole
expectation (segments, vectors, representations) and the comparisons with a store or a topic.
"""

from oracle.closing import Closed, Rules, close_partition, identity
from oracle.expected import (
    Expected,
    classify,
    expect,
    representation_differences,
    store_differences,
    topic_differences,
)
from oracle.merge import merge

__all__ = [
    "Closed",
    "Expected",
    "Rules",
    "classify",
    "close_partition",
    "expect",
    "identity",
    "merge",
    "representation_differences",
    "store_differences",
    "topic_differences",
]
