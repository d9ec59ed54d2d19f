"""``config.prunable``: the kernels it does not match stay dense in every method's masks and out of every count,
while the others still hit their target densities exactly; a pattern that matches nothing is one clear error."""
import jax
import numpy as np
import pytest

from configs import pai as pai_config
from jaxprune import masks
from jaxprune.errors import ConfigError
from jaxprune.experiments import common, masking

METHODS = ("random", "magnitude", "snip", "grasp", "synflow", "magnitude_after", "imp")


def tiny_config(**overrides):
    c = pai_config.get_config()
    c.update(dict(dataset="gaussian", labels="teacher", num_examples=128, num_test=64, input_dim=8, num_classes=3,
                  widths=(16, 16), num_seeds=2, epochs=1, batch_size=32, synflow_rounds=3, prune_fraction=0.5))
    c.update(overrides)
    return c


@pytest.fixture
def middle_only():
    config = tiny_config(prunable="Dense_1")  # the first (Dense_0) and last (Dense_2) layers stay dense
    setup = common.setup(config)
    yield config, setup, common.init_seeds(setup)
    masks.select("")


@pytest.mark.parametrize("scope,methods", [("global", METHODS), ("layerwise", ("magnitude", "snip"))])
def test_unselected_layers_stay_dense_and_the_rest_hit_their_target(middle_only, scope, methods):
    config, setup, seeds = middle_only
    config.scope = scope
    one = jax.tree.map(lambda p: p[0], seeds.params)
    assert masks.prunable_names(one) == ["Dense_1/kernel"]
    for method in methods:
        for sparsity, stacked in masking.method_masks(method, config, setup, seeds, (0.5, 0.75)).items():
            kept = {name: np.asarray(m) for name, m in
                    zip(["Dense_0", "Dense_1", "Dense_2"], [stacked[f"Dense_{i}"]["kernel"] for i in range(3)])}
            assert kept["Dense_0"].all() and kept["Dense_2"].all(), method
            assert (kept["Dense_1"].sum(axis=(1, 2)) == round((1 - sparsity) * 16 * 16)).all(), (method, sparsity)
            report = masking.mask_report(setup, seeds, stacked)
            assert list(report["layer_density"]) == ["Dense_1/kernel"]
            np.testing.assert_allclose(report["density"], 1 - sparsity)


def test_a_pattern_that_matches_no_kernel_or_is_not_a_regex_is_refused():
    with pytest.raises(ConfigError, match=r"config.prunable='Conv' matches none .*Dense_0/kernel"):
        common.setup(tiny_config(prunable="Conv"))
    with pytest.raises(ConfigError, match="not a regular expression"):
        common.setup(tiny_config(prunable="("))
    assert masks.prunable_names({"Dense_0": {"kernel": np.ones((2, 2))}}) == ["Dense_0/kernel"]  # reset
