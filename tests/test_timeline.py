"""The shared timeline (facecut.timeline) and the sampler's grid on it.

Unit tests on timestamp sequences; the format-matrix tests run the same code on
real files (packed B-frames, TS, gaps)."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import pytest

from facecut.decode import _Sampler
from facecut.timeline import TS_WRAP, FrameClock, Unwrapper

TB = Fraction(1, 25)


def _run(pts_list, tb=TB, rate=25):
    """Push frames (numbered in arrival = display order) through a FrameClock."""
    clock = FrameClock(tb, Fraction(rate))
    out = []
    for i, p in enumerate(pts_list):
        out += clock.push(SimpleNamespace(pts=p, i=i))
    out += clock.flush()
    assert [o.frame.i for o in out] == list(range(len(pts_list))), "frames keep their order"
    return out, clock


def test_in_order_stream_is_unchanged():
    out, clock = _run(list(range(100)))
    assert [o.pts for o in out] == list(range(100))
    assert [o.t for o in out] == [i / 25 for i in range(100)]
    assert clock.reordered == 0 and all(o.event is None for o in out)


def test_packed_b_frame_order_is_put_back():
    # DivX/Xvid packed B-frames: ...268, 270, 269, 271, 273, 272...
    raw = []
    for g in range(0, 60, 3):
        raw += [g, g + 2, g + 1]
    out, clock = _run(raw)
    assert [o.pts for o in out] == list(range(60))
    assert out[-1].t == pytest.approx(59 / 25)  # time does not run fast
    assert clock.reordered > 0
    assert all(o.event is None for o in out)


def test_jitter_is_clamped_not_shifted():
    raw = list(range(50)) + [45] + list(range(51, 80))  # one late duplicate-ish pts
    out, _ = _run(raw)
    ts = [o.t for o in out]
    assert ts == sorted(ts)
    assert ts[-1] == pytest.approx(79 / 25)


def test_backward_jump_starts_a_segment_that_continues():
    raw = list(range(100)) + list(range(10, 60))  # a second recording appended
    out, _ = _run(raw)
    events = [i for i, o in enumerate(out) if o.event]
    assert events == [100] and out[100].event == "discontinuity"
    assert out[100].t == pytest.approx(100 / 25)  # continues where the last frame ended
    assert out[-1].t == pytest.approx(149 / 25)
    assert out[100].pts == 10  # the raw pts stays (for seeks)


@pytest.mark.timeout(30)  # hang guard: walking the grid step by step would take days
def test_forward_jump_stays_a_gap_and_the_sampler_skips_it_at_once():
    raw = list(range(50)) + [p + 10**9 * 25 for p in range(50, 60)]
    out, _ = _run(raw)
    assert out[50].t == pytest.approx(50 / 25 + 1e9)
    sampler = _Sampler(2.0, 0)
    got = [k for o in out for k, *_ in sampler.feed(o.frame, o.pts, o.t)]
    assert got[:4] == [0, 1, 2, 3]
    assert got[4] == 4  # the last frame before the gap is shown at 2.0 s...
    assert got[5] >= 2 * 10**9  # ...then no invented samples inside the gap
    assert len(got) == len(set(got))


def test_single_corrupt_pts_is_an_outlier_not_a_gap():
    raw = list(range(30)) + [10**12] + list(range(31, 60))
    out, _ = _run(raw)
    assert [o.pts for o in out] == list(range(60))
    assert all(o.event is None for o in out)


def test_ts_wraparound_keeps_the_real_gap():
    tb = Fraction(1, 90000)
    step = 3600  # 25 fps
    start = TS_WRAP - 10 * step
    raw = [(start + i * step) % TS_WRAP for i in range(30)]
    out, _ = _run(raw, tb=tb)
    assert out[10].event == "wrap"
    ts = [o.t for o in out]
    assert all(b - a == pytest.approx(step / 90000) for a, b in zip(ts, ts[1:]))


def test_missing_pts_are_one_frame_apart():
    out, _ = _run([None] * 10)
    assert [o.t for o in out] == [i / 25 for i in range(10)]


def test_unwrapper_small_steps_change_nothing():
    u = Unwrapper(TB)
    offs = [u(p, 1)[0] for p in [0, 1, 2, 1, 3, 4]]
    assert offs == [0] * 6
    off, ev = u(-1000)
    assert ev == "discontinuity" and -1000 + off == 5
