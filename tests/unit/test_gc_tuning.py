"""The serving process's collector settings (restored afterwards: pytest shares the process)."""

from __future__ import annotations

import gc

from gateway import gc_tuning


def test_tune_freezes_what_is_loaded_and_sets_the_thresholds() -> None:
    thresholds = gc.get_threshold()
    try:
        gc_tuning.tune()
        assert gc.get_threshold() == (*thresholds[:2], gc_tuning.OLDEST_THRESHOLD)
        assert gc.get_freeze_count() > 1000  # modules, classes, functions
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
