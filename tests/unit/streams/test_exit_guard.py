"""A process whose exit is held up by a stray non-daemon thread still ends, with the given code,
and says which thread held it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60
    )


def test_a_stray_thread_cannot_hold_the_exit() -> None:
    done = run(
        """
        import logging, threading, time
        from streams.exit_guard import exit_within
        logging.basicConfig()
        threading.Thread(target=time.sleep, args=(3600,), name="stuck-consumer").start()
        exit_within(0.5, 3)
        """
    )
    assert done.returncode == 3
    assert "threads still running: stuck-consumer" in done.stderr


def test_a_clean_exit_keeps_its_own_code() -> None:
    done = run(
        """
        import sys
        from streams.exit_guard import exit_within
        exit_within(30, 3)
        sys.exit(0)
        """
    )
    assert done.returncode == 0 and done.stderr == ""


def test_a_released_worker_ends_at_once_with_its_error_last() -> None:
    """After a fatal error the worker's one line must stay the last one: no wait, no guard line."""
    done = run(
        """
        import sys, threading, time
        from streams.exit_guard import end_if_released, exit_within
        end_if_released(5)  # nothing released yet: returns
        threading.Thread(target=time.sleep, args=(3600,), name="stuck-consumer").start()
        exit_within(30, 1)
        print("msli: cannot write store", file=sys.stderr)
        end_if_released(1)
        print("not reached", file=sys.stderr)
        """
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["msli: cannot write store"]
