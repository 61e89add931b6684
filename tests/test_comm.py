"""Data-parallel arithmetic: straggler expectations, bytes, bandwidth, the noise scale."""

import math

import pytest

from lsml_tui.profilers import comm
from lsml_tui.trainer.validate import parse_straggle


def test_harmonic_numbers_are_the_expected_max_of_exponentials():
    assert comm.harmonic(1) == 1.0
    assert comm.harmonic(4) == pytest.approx(1 + 1 / 2 + 1 / 3 + 1 / 4)     # 2.0833
    assert comm.harmonic(1000) == pytest.approx(math.log(1000) + 0.5772, abs=1e-3)


def test_expected_max_delay_of_the_straggler_specs():
    # Exp(mean 20 ms) on 4 ranks: 0.02 * H_4 = 0.02 * 2.0833 = 0.041667, exactly
    assert comm.expected_max_delay(parse_straggle("exp:20ms"), 4) == pytest.approx(0.02 * 25 / 12)
    # one fixed slow rank: the max is its delay on every draw
    assert comm.expected_max_delay(parse_straggle("rank1:50ms"), 2) == pytest.approx(0.05)
    # both, 2 ranks: E[max(X0, 0.05 + X1)] = 0.05 + 0.02 + P(X0 > X1 + 0.05) * 0.02
    # (memorylessness), with P = exp(-0.05 / 0.02) / 2, so 0.07 + 0.02 * e^-2.5 / 2
    expected = 0.07 + 0.02 * math.exp(-2.5) / 2
    got = comm.expected_max_delay(parse_straggle("exp:20ms,rank1:50ms"), 2)
    assert got == pytest.approx(expected, rel=0.01)
    assert comm.mean_delay(parse_straggle("exp:20ms,rank1:50ms"), 1) == pytest.approx(0.07)


def test_bytes_through_the_busiest_link_ring_against_parameter_server():
    m = 1_000_000
    # ring, N = 4: 2 * 3 / 4 * M = 1.5 M per rank and per link
    assert comm.wire_bytes("allreduce", m, 4) == {"per_rank": 1.5 * m, "busiest_link": 1.5 * m}
    # parameter server, N = 4: a worker sends M and gets M; rank 0 carries 2 * 3 * M = 6 M
    assert comm.wire_bytes("ps", m, 4) == {"per_rank": 2 * m, "busiest_link": 6 * m}
    # bf16 halves the ring's payload: 1.5 * M / 2
    assert comm.wire_bytes("bf16", m, 4)["busiest_link"] == 0.75 * m
    assert comm.wire_bytes("powersgd", m, 4)["busiest_link"] is None


def test_bus_bandwidth_follows_nccl_tests():
    # 8 MB in 2 ms: algbw 4 GB/s; ring on 8 ranks busbw = 4e9 * 2 * 7 / 8 = 7e9
    bw = comm.bandwidth("allreduce", 8e6, 2e-3, 8)
    assert bw["algbw"] == pytest.approx(4e9) and bw["busbw"] == pytest.approx(7e9)
    assert comm.bandwidth("ps", 8e6, 2e-3, 8)["busbw"] == pytest.approx(4e9 * 14)
    assert comm.bandwidth("allreduce", 8e6, 0.0, 8)["algbw"] is None


def test_wait_is_the_gap_to_the_slowest_compute_and_comm_is_the_rest():
    rows = [dict.fromkeys(comm.FIELDS, 0.0) for _ in range(2)]
    rows[0].update(compute_s=0.010, exposed_s=0.030, step_s=0.045)
    rows[1].update(compute_s=0.030, exposed_s=0.008, step_s=0.043)
    fast, slow = comm.ranks_breakdown(rows)
    assert fast["wait_s"] == pytest.approx(0.020)          # 0.030 - 0.010
    assert fast["comm_s"] == pytest.approx(0.010)          # 0.030 exposed - 0.020 waiting
    assert slow["wait_s"] == 0 and slow["comm_s"] == pytest.approx(0.008)
