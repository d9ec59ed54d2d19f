"""No Free Prune Figs 2a/3/2b/2c: the epoch-by-epoch curve through IMP, the sweeps as a vmapped axis, bad input."""
import os

import numpy as np
import pytest
from conftest import assert_close_across_programs

from configs import nfp_fig2
from jaxprune.errors import ConfigError
from jaxprune.experiments import noise_correlation_curve as ncc


def tiny_config(preset="", **overrides):
    c = nfp_fig2.get_config(preset)
    c.update(dict(num_seeds=2, num_examples=64, num_test=8, input_dim=8, teacher_widths=(8,), widths=(16, 16),
                  batch_size=32, epochs=3, learning_rate=1e-2) | overrides)
    return c


def test_the_curve_through_imp_and_a_gradient_noise_sweep_whose_zero_is_the_plain_run(run_experiment):
    _, workdir, plain = run_experiment(ncc, tiny_config(rounds=2))
    assert [r["epoch"] for r in plain["curve"]] == list(range(1, 7)) and plain["densities"] == pytest.approx([1, 0.8])
    assert [r["round"] for r in plain["curve"]] == [0, 0, 0, 1, 1, 1]
    assert [p["paper_correlation"]["mean"] for p in plain["peaks"]] == [plain["curve"][2]["mean"],
                                                                       plain["curve"][5]["mean"]]
    assert all(r["se"] > 0 for r in plain["curve"])  # two seeds, two datasets of noise fitted differently
    climb = plain["climb"][1]
    assert climb["mean_difference"] == pytest.approx(plain["curve"][5]["mean"] - plain["curve"][3]["mean"], abs=1e-6)
    assert plain["drop"][0]["mean_difference"] == pytest.approx(
        plain["curve"][3]["mean"] - plain["curve"][2]["mean"], abs=1e-6) and len(plain["drop"]) == 1
    assert os.path.getsize(os.path.join(workdir, "curves.npz")) > 0
    assert os.path.getsize(os.path.join(workdir, "correlation_vs_epoch.png")) > 0
    _, workdir, swept = run_experiment(ncc, tiny_config(rounds=2, sweep="gradient_noise_std", sweep_values=(0.0, 3.0)))
    # The sweep is one vmapped axis: its σ = 0 networks are the plain run (another compiled program: up to rounding).
    assert_close_across_programs(swept["curves"]["0.0"], [r["mean"] for r in plain["curve"]], rtol=1e-4)
    assert not np.allclose(swept["curves"]["3.0"], swept["curves"]["0.0"], rtol=1e-3)
    assert [r["mean"] for r in swept["curve"]] == swept["curves"]["0.0"]
    assert os.path.getsize(os.path.join(workdir, "correlation_vs_epoch_by_gradient_noise_std.png")) > 0


@pytest.mark.parametrize("overrides, message", [
    (dict(gradient_noise_std=-0.1), "gradient_noise_std"),
    (dict(sweep="gradient_noise_std", sweep_values=()), "sweep_values"),
    (dict(sweep="gradient_noise_std", sweep_values=(0.0, -1.0)), "stds must be >= 0"),
    (dict(sweep="learning_rate", sweep_values=(0.0,)), "learning rates"),
    (dict(sweep_values=(1.0,)), "without config.sweep"),
    (dict(sweep="momentum", sweep_values=(1.0,)), "sweep"),
    (dict(dataset="mnist1d"), "dataset"),
])
def test_bad_input_is_one_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ncc.validate(tiny_config(**overrides))


def test_presets_are_the_papers_settings():
    fig3, lr, noise = (nfp_fig2.get_config(p) for p in ("long", "lr_sweep", "gradient_noise"))
    assert fig3.rounds == 15 and nfp_fig2.get_config().rounds == 5
    assert lr.sweep_values == (1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3) and lr.rounds == 1
    assert noise.sweep_values == (0.0, 0.1, 0.2, 0.3, 0.5) and noise.learning_rate == 1e-3
