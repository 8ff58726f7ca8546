"""Progress for long commands: a tqdm bar on a terminal, a plain line every few seconds in a log."""

from __future__ import annotations

import sys
import time
from typing import Any

from tqdm import tqdm

__all__ = ["Progress"]


class Progress:
    """Counts towards a total; `postfix` adds live figures. Carriage-return bars garble CI logs,
    so without a terminal it prints one line per `interval` seconds instead."""

    def __init__(self, desc: str, total: int | None, unit: str = "ev", interval: float = 5.0) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0
        self._postfix: dict[str, Any] = {}
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False)
            if sys.stderr.isatty()
            else None
        )
        self._interval = interval
        self._printed: tuple[int, dict[str, Any]] | None = None  # what the last line showed
        self._started = self._last = time.monotonic()

    def update_to(self, n: int, **postfix: Any) -> None:
        self._postfix = postfix
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        self.n = n
        if self._bar is None and time.monotonic() - self._last >= self._interval:
            self._print_line()

    def close(self) -> None:
        """End the bar; in a log, print the last figures (the periodic line may be seconds old)."""
        if self._bar is not None:
            self._bar.close()
        elif self.n and self._printed != (self.n, self._postfix):
            self._print_line()

    def _print_line(self) -> None:
        self._last = time.monotonic()
        self._printed = (self.n, self._postfix)
        rate = self.n / max(1e-9, self._last - self._started)
        of = f"/{self.total:,}" if self.total else ""
        extra = "".join(
            f", {k} {v:,}" if isinstance(v, int) else f", {k} {v}" for k, v in self._postfix.items()
        )
        print(
            f"{self.desc}: {self.n:,}{of} {self.unit} ({rate:,.0f} {self.unit}/s{extra})",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
