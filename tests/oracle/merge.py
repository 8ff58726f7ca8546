"""The store's merge rules, written again from their description, one closed record at a time.

Per (user, window) the store keeps segments under dense ordinals it assigns itself, in arrival
order. A record's events that the window already holds (same identity) are dropped; a record that
brings nothing new changes nothing. A late record's new events go into the window's last segment
while it has room (`max_events`), the rest into a new segment; any other record's new events make
a new segment. A window that holds `max_segments` segments takes no new one: the record goes to
the dead-letter topic (`segment-cap`) and its events that found no room are not stored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from oracle.closing import Closed, Rules, identity

Windows = dict[tuple[str, int], list[list[dict[str, Any]]]]  # (user, window) -> events per ordinal


def merge(records: Iterable[Closed], rules: Rules, windows: Windows | None = None) -> tuple[Windows, int]:
    """Fold closed records into stored windows; return the windows and how many records were capped."""
    windows = {} if windows is None else windows
    capped = 0
    for record in records:
        segments = windows.setdefault((record.user, record.window), [])
        held = {identity(e) for segment in segments for e in segment}
        new = []
        for event in record.events:
            if identity(event) not in held:
                held.add(identity(event))
                new.append(event)
        if not new:
            continue
        if record.reason == "late" and segments:
            room = max(rules.max_events - len(segments[-1]), 0)
            segments[-1].extend(new[:room])
            new = new[room:]
        if not new:
            continue
        if len(segments) >= rules.max_segments:
            capped += 1
            continue
        segments.append(new)
    return {key: segs for key, segs in windows.items() if segs}, capped
