"""Progress lines: a long stage logs what it does and, at least every PROGRESS_SECONDS, its units done and an ETA,
also while the main thread is blocked in one call."""
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxprune import parallel
from jaxprune.experiments import common


def test_a_stage_reports_while_blocked_and_its_eta_comes_from_the_rate(monkeypatch):
    monkeypatch.setattr(common, "PROGRESS_SECONDS", 0.05)
    lines = []
    with common.stage(lines.append, "training", 4, "networks") as advance:
        time.sleep(0.3)  # one blocking call, no unit done yet: the heartbeat still reports
        blocked = list(lines)
        advance(2)
        time.sleep(0.3)
    assert lines[0] == "training: 4 networks"
    assert len(blocked) >= 3 and all("0/4 networks done" in x and "ETA after the first" in x for x in blocked[1:])
    after = [x for x in lines[len(blocked):] if "2/4" in x]
    assert after and all("networks/s, ETA 0:00:0" in x for x in after)  # 2 done in ~0.3 s: ~0.3 s left
    count = len(lines)
    time.sleep(0.15)
    assert len(lines) == count  # the heartbeat ends with the stage


def test_staged_counts_each_item_as_it_is_done():
    lines = []
    assert list(common.staged(lines.append, "methods", ["a", "b"], "methods")) == ["a", "b"]
    assert lines == ["methods: 2 methods"]


def test_seed_map_reports_every_real_seed_once_as_its_block_finishes_and_changes_no_result():
    """``on_block``: 5 seeds in blocks of 2 (the last one padded) on one device report 2 + 2 + 1 seeds, and the
    outputs equal those of the program without the callback bit for bit."""
    mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.SEED_AXIS,))
    x = jnp.arange(5.0)
    reported = []
    with_callback = parallel.seed_map(lambda v: jnp.sin(v) * 3, mesh, block=2, on_block=reported.append)(x)
    jax.effects_barrier()
    plain = parallel.seed_map(lambda v: jnp.sin(v) * 3, mesh, block=2)(x)
    assert sorted(reported) == [1, 2, 2]
    np.testing.assert_array_equal(np.asarray(with_callback), np.asarray(plain))


def test_per_seed_counts_and_seed_lists_print_as_one_short_phrase_at_any_number_of_seeds():
    epochs = [30] * 200 + [31] * 40 + [36] * 10  # 250 seeds, as memorization's k = 250
    assert common.range_median(epochs) == "30–36, median 30"
    assert common.range_median([31, 33]) == "31–33, median 32"
    assert common.range_median([7, 7, 7]) == "7" and common.range_median([]) == "n/a"
    assert common.named_seeds(range(250)) == "250 seeds: 0, 1, 2, 3, 4, …"
    assert common.named_seeds([3, 9]) == "2 seeds: 3, 9" and common.named_seeds([3]) == "1 seed: 3"
