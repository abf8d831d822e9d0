"""The durations and sizes that progress lines and summaries show (pure functions)."""

from __future__ import annotations

from bertkit.summary import fmt_duration, human_bytes


def test_fmt_duration():
    assert fmt_duration(59) == "0:59" and fmt_duration(3725) == "1:02:05" and fmt_duration(-3) == "0:00"
    assert fmt_duration(59.9) == "0:59"  # whole seconds elapsed, not rounded up
    assert fmt_duration(float("inf")) == "?"  # an ETA before any rate is known


def test_human_bytes():
    assert human_bytes(512) == "512 B" and human_bytes(4_200_000) == "4.2 MB"
    assert human_bytes(3.5e12) == "3500.0 GB"
