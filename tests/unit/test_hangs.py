"""The hang rate that starts the ladder: a frozen backend climbs, a flaky one essentially never.

The simulations are seeded, so their figures are exact and stable: 200 calls of which 40 % hang
at random, as a team running a pipeline on Ollama saw (docs/supervision.md), counted once with
the rule this replaced (three hangs in a row: a window of 3 that must all have hung) and once
with the defaults (at least 3 hangs, at least 90 % of the last 10 calls).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from ragvisor.config import LadderSettings
from ragvisor.errors import BackendError
from ragvisor.supervise.hangs import HangRule, HangWindow
from tests.unit.test_ladder import HANG, Rig, run

DEFAULT = HangRule.from_settings(LadderSettings())
# The rule before the hang rate: `hang_threshold` (3) timeouts in a row, reset by any answer.
IN_A_ROW = HangRule(threshold=3, window=3, rate=1.0)
SEED = 1
CALLS = 200
HANG_SHARE = 0.4


def climbs(rule: HangRule, outcomes: list[bool]) -> int:
    """How often `rule` starts the ladder over these outcomes (as the ladder does, each climb
    forgets the hangs it deals with)."""
    window = HangWindow(rule)
    count = 0
    for hung in outcomes:
        if window.note(hung=hung):
            count += 1
            window.after_climb()
    return count


def flaky(seed: int, calls: int = CALLS, share: float = HANG_SHARE) -> list[bool]:
    """`calls` outcomes of which each hangs with probability `share`, from `seed`."""
    rng = random.Random(seed)
    return [rng.random() < share for _ in range(calls)]


def test_the_defaults_are_three_hangs_and_nine_of_the_last_ten_calls():
    """hang_threshold 3, hang_window 10, hang_rate 0.9 unless the configuration says otherwise."""
    assert (DEFAULT.threshold, DEFAULT.window, DEFAULT.rate) == (3, 10, 0.9)


def test_a_backend_frozen_from_the_start_climbs_at_the_hang_threshold():
    """Every call hangs from the first: the third hang (3 of 3) starts the ladder."""
    window = HangWindow(DEFAULT)
    assert [window.note(hung=True) for _ in range(3)] == [False, False, True]


def test_a_backend_that_freezes_after_a_healthy_stretch_climbs_at_the_ninth_hang():
    """Ten answers, then nothing but hangs: the ninth hang (9 of the last 10) starts it."""
    window = HangWindow(DEFAULT)
    for _ in range(10):
        assert not window.note(hung=False)
    decisions = [window.note(hung=True) for _ in range(9)]
    assert decisions == [False] * 8 + [True]
    assert window.describe() == "9 of the last 10 calls hung"


def test_only_a_hang_starts_the_ladder():
    """An answer never starts it, even when the window would otherwise qualify."""
    window = HangWindow(HangRule(threshold=1, window=10, rate=0.1))
    assert not window.note(hung=False)
    assert window.note(hung=True)


@pytest.mark.parametrize(("threshold", "needed"), [(3, 3), (5, 5)])
def test_hang_threshold_stays_the_fewest_hangs_that_start_it(threshold, needed):
    """A low rate does not start the ladder before `hang_threshold` hangs."""
    window = HangWindow(HangRule(threshold=threshold, window=10, rate=0.1))
    decisions = [window.note(hung=True) for _ in range(needed)]
    assert decisions == [False] * (needed - 1) + [True]


def test_after_a_climb_another_needs_a_full_windows_evidence():
    """A climb forgets its hangs but not that calls were seen: still hanging afterwards, the
    backend climbs again at the ninth new hang (9 of 10), not the third."""
    window = HangWindow(DEFAULT)
    assert [window.note(hung=True) for _ in range(3)] == [False, False, True]
    window.after_climb()
    assert (window.calls, window.hangs) == (10, 0)
    assert [window.note(hung=True) for _ in range(9)] == [False] * 8 + [True]


def test_a_rate_needs_whole_hangs_without_rounding_errors():
    """0.9 of 10 calls is 9 hangs and 0.7 of 10 is 7: the float product is not rounded up."""
    assert HangRule(threshold=1, window=10, rate=0.9).hangs_needed(10) == 9
    assert HangRule(threshold=1, window=10, rate=0.7).hangs_needed(10) == 7
    assert HangRule(threshold=3, window=10, rate=0.9).hangs_needed(2) == 3


def test_40_percent_random_hangs_over_200_calls_climb_0_times_not_6():
    """Seed 1, 200 calls, 40 % of them hung at random: three in a row started the ladder 6
    times; the hang rate (9 of the last 10) starts it 0 times."""
    outcomes = flaky(SEED)
    assert sum(outcomes) == 79  # the seed's share of hangs: 39.5 %
    assert climbs(IN_A_ROW, outcomes) == 6
    assert climbs(DEFAULT, outcomes) == 0


def test_over_1000_seeded_runs_of_200_flaky_calls_the_rate_climbs_0_2_times_a_run_not_8():
    """Seeds 0-999, 200 calls each, 40 % hangs: three in a row climbed 8.2 times a run (every
    run at least once, up to 18); the hang rate 0.185 times a run (in 17 % of the runs, at most
    3). 55 of those 185 climbs are a run's first three calls all hanging, which is all a
    backend frozen from the start shows. (A rate of 0.8 would climb 0.9 times a run, in 60 %
    of them.)"""
    runs = [flaky(seed) for seed in range(1000)]
    before = [climbs(IN_A_ROW, outcomes) for outcomes in runs]
    after = [climbs(DEFAULT, outcomes) for outcomes in runs]
    assert sum(before) / len(runs) == pytest.approx(8.19, abs=0.01)
    assert min(before) >= 1
    assert sum(after) == 185
    assert sum(1 for count in after if count) == 166
    assert max(after) == 3
    assert sum(1 for outcomes in runs if all(outcomes[:3])) == 55
    eighty = HangRule(threshold=3, window=10, rate=0.8)
    assert sum(climbs(eighty, outcomes) for outcomes in runs) / len(runs) == pytest.approx(
        0.9, abs=0.01
    )


def test_the_ladder_itself_climbs_0_times_in_the_seeded_flaky_run_and_soon_once_frozen():
    """Through EscalationLadder.note_*: the seed-1 run of 200 calls (40 % hangs, errors and
    answers among the rest) starts no climb; when the backend then freezes, the eighth hang
    does (the run ended with 6 hangs in its last 10 calls)."""

    async def scenario() -> None:
        rig = Rig()
        rng = random.Random(SEED)
        for _ in range(CALLS):
            draw = rng.random()
            if draw < HANG_SHARE:
                rig.ladder.note_failure(HANG)
            elif draw < HANG_SHARE + 0.1:
                rig.ladder.note_failure(BackendError("500"))
            else:
                rig.ladder.note_success()
            await asyncio.sleep(0)
        assert rig.ladder.runs == 0
        hangs = 0
        while not rig.ladder.running and hangs < 20:
            rig.ladder.note_failure(HANG)
            hangs += 1
        assert hangs == 8
        await rig.climbed()
        assert rig.ladder.runs == 1

    run(scenario)
