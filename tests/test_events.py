"""The coalescer bounds how many batches leave the trainer, whatever the step rate."""

from lsml_tui.trainer.events import Coalescer, StepMetrics


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def metrics(step):
    return StepMetrics(step, 1.0, 0.1, 1.0, False, 100.0, 0.0)


def test_ten_thousand_steps_a_second_leave_as_at_most_twenty_batches_a_second():
    clock, batches = FakeClock(), []
    c = Coalescer(batches.append, max_rate=20.0, clock=clock)
    for step in range(20_000):          # 2 simulated seconds at 10,000 steps/s
        clock.now = step / 10_000
        c.emit(metrics(step))
        c.poll()
    c.flush()
    # 2 s * 20 batches/s = 40, +1 for the first batch at t=0 and +1 for the final flush
    assert len(batches) <= 2 * 20 + 2
    delivered = [e.step for b in batches for e in b]
    assert delivered == list(range(20_000))   # nothing lost, order kept


def test_a_slow_loop_gets_every_event_at_once():
    clock, batches = FakeClock(), []
    c = Coalescer(batches.append, max_rate=20.0, clock=clock)
    for step in range(5):               # one step every 0.1 s, slower than 1/20 s
        clock.now = step * 0.1
        c.emit(metrics(step))
        c.poll()
    assert [len(b) for b in batches] == [1] * 5
