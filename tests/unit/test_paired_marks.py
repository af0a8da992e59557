"""Paired differences carry marks for seeds whose two runs differ in more than the method: data builds, threads."""

import pytest

from negmine.experiment import (
    MIXED_MARK,
    MIXED_NOTE,
    THREADS_MARK,
    THREADS_NOTE,
    mark_notes,
    paired_difference,
    seed_marks,
    thread_count,
)


def test_thread_count_reads_the_machine_line_machine_record_writes():
    line = "x86_64, CPU only (AVX512), 2 cores, 1 threads, torch 2.14.1+cu130, Python 3.11.7"
    assert thread_count({"machine": line}) == 1
    assert thread_count({"machine": line.replace("1 threads", "16 threads")}) == 16
    assert thread_count({"machine": "x86_64, NVIDIA H100, torch 2.14.1"}) is None
    assert thread_count({}) is None


def _method(values, threads=None, data=None):
    return {"seeds": {s: {"m": v} for s, v in values.items()}, "threads": threads or {}, "data": data or {}}


def test_seeds_paired_across_thread_counts_or_builds_are_marked_and_noted():
    results = {"methods": {
        "base": _method({0: 0.5, 1: 0.6, 2: 0.7, 3: 0.8}, threads={0: 1, 1: 2, 2: 1}, data={0: "a", 3: "a"}),
        "ours": _method({0: 0.6, 1: 0.6, 2: 0.9, 3: 0.9}, threads={0: 2, 1: 2, 3: 1}, data={0: "a", 3: "b"}),
    }}
    d = paired_difference(results, "ours", "base", "m")
    assert d["per_seed"] == pytest.approx({0: 0.1, 1: 0.0, 2: 0.2, 3: 0.1})
    assert d["mixed_threads"] == [0]  # seed 1: the same count; seeds 2, 3: one side does not say
    assert d["mixed_data"] == [3]
    assert [seed_marks(d, s) for s in range(4)] == [THREADS_MARK, "", "", MIXED_MARK]
    assert mark_notes([d, None]) == [MIXED_NOTE, THREADS_NOTE]
    clean = paired_difference({"methods": {"base": _method({0: 0.5}, threads={0: 1}),
                                           "ours": _method({0: 0.6}, threads={0: 1})}}, "ours", "base", "m")
    assert seed_marks(clean, 0) == "" and mark_notes([clean]) == []
