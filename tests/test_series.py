"""Plot series stay bounded on long runs and keep their spikes."""

from lsml_tui.tui.series import EMA, Series


def test_a_million_steps_hold_a_bounded_number_of_points_and_the_spike_survives():
    s = Series(recent=2000, max_buckets=1000)
    for step in range(1_000_000):
        s.append(step, 1.0 + (100.0 if step == 1234 else 0.0))
    xs, ys = s.points()
    # at most the exact tail (recent + one fold of 256) plus two points per bucket
    assert len(xs) <= 2000 + 256 + 2 * 1000
    assert max(ys) == 101.0                      # an old spike is still drawn
    assert (xs[0], xs[-1]) == (0, 999_999)       # the whole run, start to end
    assert xs == sorted(xs)
    assert s.count == 1_000_000 and s.last == 1.0


def test_what_is_held_does_not_grow_with_the_run():
    s = Series(recent=2000, max_buckets=1000)
    sizes = []
    for step in range(3_000_000):
        s.append(step, float(step % 13))
        if step + 1 in (1_000_000, 3_000_000):
            sizes.append(len(s))
    assert max(sizes) <= 2000 + 256 + 2 * 1000      # the same bound at 1M and at 3M


def test_recent_points_are_exact():
    s = Series(recent=100)
    for step in range(10_000):
        s.append(step, float(step))
    xs, ys = s.points()
    assert xs[-100:] == list(range(9_900, 10_000)) and ys[-100:] == [float(x) for x in xs[-100:]]


def test_drawing_resolution_keeps_min_and_max_per_column():
    s = Series()
    for step in range(5000):
        s.append(step, -50.0 if step == 777 else float(step % 10))
    xs, ys = s.points(columns=100)
    assert len(xs) <= 2 * 100
    assert min(ys) == -50.0 and max(ys) == 9.0
    assert xs == sorted(xs)


def test_non_finite_values_are_not_drawn():
    s = Series()
    for y in (1.0, float("nan"), float("inf"), 2.0):
        s.append(len(s), y)
    assert s.points()[1] == [1.0, 2.0]


def test_ema_is_bias_corrected():
    e = EMA(beta=0.9)
    assert e.update(5.0) == 5.0                  # (0.1 * 5) / (1 - 0.9) = 5
    assert abs(e.update(5.0) - 5.0) < 1e-12
