"""Effective (path-connected) weights against brute force: every input→output path of a small MLP enumerated,
and node reachability on explicit edge lists of a conv net (flatten head) and a ResNet (identity and 1x1
shortcuts); hand-made cases (a channel cut off, a block kept alive by its shortcut, an empty next layer); a
dense mask is fully effective for zoo models even with running statistics that would kill every unit; a
40-layer chain that float32 path counting cannot resolve; vmap equals per seed."""
import functools
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import connectivity, masks, models, train
from jaxprune.errors import ConfigError
from jaxprune.models.conv import POOL, ConvNet
from jaxprune.models.resnet import ResNet


def setup(model, feature_shape, shift_stats=0.0):
    """(apply_fn, params) of ``model`` without random initialization (the kernels' values are not used):
    every parameter and running statistic 1, except running means ``shift_stats``."""
    shapes = jax.eval_shape(lambda: train.init_variables(model, jax.random.key(0), jnp.ones(feature_shape)))
    params, batch_stats = jax.tree_util.tree_map_with_path(
        lambda path, s: jnp.full(s.shape, shift_stats if masks.path_name(path).endswith("mean") else 1.0), shapes)
    return train.apply_fn_for(model, batch_stats), params


def random_masks(params, densities, seed):
    """One random mask per density (stacked on a leading axis): each prunable weight kept with that probability."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p, keep: jnp.asarray(np.stack([rng.random(p.shape) < d if keep else
                                                               np.ones(p.shape, bool) for d in densities])),
                        params, masks.prunable(params))


def effective_masks(apply_fn, params, stacked, feature_shape):
    return jax.jit(jax.vmap(lambda m: connectivity.effective_mask(apply_fn, params, m, feature_shape)))(stacked)


def kernel(tree, name, seed=None):
    """The kernel of layer ``name`` ('/'-joined module path) in a params-like tree, of one seed if given."""
    leaf = np.asarray(functools.reduce(lambda t, k: t[k], name.split("/"), tree)["kernel"])
    return leaf if seed is None else leaf[seed]


def one_seed(tree, seed):
    """Entry ``seed`` of every leaf of a stacked tree."""
    return jax.tree.map(lambda a: a[seed], tree)


def layer_names(params):
    return [n.removesuffix("/kernel") for n in masks.prunable_names(params)]


# ---- brute force -------------------------------------------------------------------------------------------------

def effective_on_edges(edges, inputs, outputs):
    """Weight ids of the edges (src, dst, id) whose src is reachable from ``inputs`` and whose dst reaches
    ``outputs``, by fixpoint iteration (id None: a parameter-free edge such as a shortcut or a flatten)."""
    def closure(start, step):
        seen = set(start)
        while True:
            new = {b for a, b in step if a in seen} - seen
            if not new:
                return seen
            seen |= new

    reach = closure(inputs, [(s, d) for s, d, _ in edges])
    coreach = closure(outputs, [(d, s) for s, d, _ in edges])
    return {w for s, d, w in edges if w is not None and s in reach and d in coreach}


def kernel_edges(name, kernel_mask, src, dst):
    """Edges of a kept Dense [i, o] or conv [tap, i, o] weight from node src:i to dst:o, id (name, index)."""
    return [(f"{src}:{idx[-2]}", f"{dst}:{idx[-1]}", (name, idx)) for idx in zip(*np.nonzero(kernel_mask))]


def identity_edges(src, dst, channels):
    return [(f"{src}:{c}", f"{dst}:{c}", None) for c in range(channels)]


def as_ids(tree, names):
    return {(name, idx) for name in names for idx in zip(*np.nonzero(kernel(tree, name)))}


# ---- MLP: all paths enumerated -------------------------------------------------------------------------------------

def effective_by_paths(kernels):
    """Set of (layer, i, j) on some input→output path all of whose weights are kept: every path enumerated."""
    sizes = [k.shape[0] for k in kernels] + [kernels[-1].shape[1]]
    on_path = set()
    for units in itertools.product(*map(range, sizes)):
        hops = [(l, units[l], units[l + 1]) for l in range(len(kernels))]
        if all(kernels[l][i, j] for l, i, j in hops):
            on_path.update(hops)
    return on_path


def test_mlp_effective_weights_are_those_on_an_enumerated_path():
    apply_fn, params = setup(models.create("mlp", 3, widths=(5, 4)), (4,))
    densities = [0.15, 0.25, 0.25, 0.35, 0.5, 0.7]
    stacked = random_masks(params, densities, seed=0)
    effective = effective_masks(apply_fn, params, stacked, (4,))
    names = layer_names(params)
    dead = 0
    for s in range(len(densities)):
        kept = [kernel(stacked, n, s) for n in names]
        got = {(l, i, j) for l, n in enumerate(names) for i, j in zip(*np.nonzero(kernel(effective, n, s)))}
        assert got == effective_by_paths(kept)
        dead += sum(int(k.sum()) for k in kept) - len(got)
    assert dead > 0  # the masks do contain dead weights


def test_empty_next_layer_kills_every_weight_and_the_summary_says_so():
    apply_fn, params = setup(models.create("mlp", 3, widths=(5, 4)), (4,))
    mask = masks.ones(params)
    mask["Dense_1"]["kernel"] = jnp.zeros_like(mask["Dense_1"]["kernel"])
    out = connectivity.report(jax.jit(lambda m: connectivity.diagnose(apply_fn, params, m, (4,)))(mask))
    assert [out["layers"][n]["kept"] for n in masks.prunable_names(params)] == [20, 0, 12]
    assert all(v["effective"] == 0 and v["collapsed"] and v["effective_density"] == 0.0
               for v in out["layers"].values())
    assert out["layers"]["Dense_0/kernel"]["nominal_density"] == 1.0
    assert out["total"] == {"size": 52, "kept": 32, "effective": 0, "collapsed_layers": 3, "disconnected": True,
                            "nominal_density": 32 / 52, "effective_density": 0.0}
    json.dumps(out)


# ---- conv net: channels ------------------------------------------------------------------------------------------

CONV = ConvNet((3, POOL, 4), (5,), 2, use_batch_norm=True, global_pool=False)  # on signals of length 8
CONV_LAYERS = ("Conv_0", "Conv_1", "Dense_0", "Dense_1")


def conv_net_edges(mask):
    """input (1 channel) → Conv_0 → 3 → pool → Conv_1 → 4 → flatten [4 positions, 4 channels] → 5 → 2."""
    flat = [(f"c1:{c}", f"flat:{pos * 4 + c}", None) for pos in range(4) for c in range(4)]
    k = lambda name, src, dst: kernel_edges(name, kernel(mask, name), src, dst)  # noqa: E731
    return (k("Conv_0", "in", "c0") + k("Conv_1", "c0", "c1") + flat + k("Dense_0", "flat", "h")
            + k("Dense_1", "h", "out"))


def test_conv_channel_cut_off_kills_what_it_feeds_and_what_feeds_it():
    apply_fn, params = setup(CONV, (8,))
    cut_input = masks.ones(params)  # channel 1 of Conv_0 receives nothing
    cut_input["Conv_0"]["kernel"] = cut_input["Conv_0"]["kernel"].at[:, :, 1].set(False)
    cut_output = masks.ones(params)  # channel 2 of Conv_1 feeds nothing: its flattened features are pruned
    cut_output["Dense_0"]["kernel"] = cut_output["Dense_0"]["kernel"].at[2::4].set(False)
    effective = effective_masks(apply_fn, params, jax.tree.map(lambda a, b: jnp.stack([a, b]), cut_input, cut_output),
                                (8,))
    conv1 = kernel(effective, "Conv_1")
    assert not conv1[0][:, 1].any() and conv1[0][:, [0, 2]].all()
    assert not conv1[1][:, :, 2].any() and conv1[1][:, :, [0, 1, 3]].all()
    for s, mask in enumerate((cut_input, cut_output)):
        assert as_ids(one_seed(effective, s), CONV_LAYERS) == effective_on_edges(
            conv_net_edges(mask), {"in:0"}, {"out:0", "out:1"})


def test_conv_net_random_masks_match_channel_graph_reachability():
    apply_fn, params = setup(CONV, (8,))
    densities = [0.1, 0.2, 0.3, 0.3, 0.5]
    stacked = random_masks(params, densities, seed=1)
    effective = effective_masks(apply_fn, params, stacked, (8,))
    dead = 0
    for s in range(len(densities)):
        mask, got = (one_seed(t, s) for t in (stacked, effective))
        expected = effective_on_edges(conv_net_edges(mask), {"in:0"}, {"out:0", "out:1"})
        assert as_ids(got, CONV_LAYERS) == expected
        dead += len(as_ids(mask, CONV_LAYERS)) - len(expected)
    assert dead > 0


# ---- ResNet: shortcuts -------------------------------------------------------------------------------------------

RESNET = ResNet(2, ((2, 1), (3, 1)), 2)  # stem 2; block 0: 2 → 2 (identity shortcut); block 1: 2 → 3 (1x1 conv)
RESNET_LAYERS = ("Conv_0", "BasicBlock_0/Conv_0", "BasicBlock_0/Conv_1", "BasicBlock_1/Conv_0",
                 "BasicBlock_1/Conv_1", "BasicBlock_1/Conv_2", "Dense_0")


def resnet_edges(mask):
    """in → stem → x0; x0 → conv → y0 → conv → z0, out0 = z0 + x0; out0 → conv → y1 → conv → z1,
    out0 → 1x1 conv → s1, out1 = z1 + s1; out1 → Dense → logits."""
    k = lambda name, src, dst: kernel_edges(name, kernel(mask, name), src, dst)  # noqa: E731
    return (k("Conv_0", "in", "x0") + k("BasicBlock_0/Conv_0", "x0", "y0") + k("BasicBlock_0/Conv_1", "y0", "z0")
            + identity_edges("z0", "out0", 2) + identity_edges("x0", "out0", 2)
            + k("BasicBlock_1/Conv_0", "out0", "y1") + k("BasicBlock_1/Conv_1", "y1", "z1")
            + k("BasicBlock_1/Conv_2", "out0", "s1") + identity_edges("z1", "out1", 3) + identity_edges("s1", "out1", 3)
            + k("Dense_0", "out1", "logits"))


def without(params, *names):
    mask = masks.ones(params)
    for name in names:
        block, conv = name.split("/")
        mask[block][conv]["kernel"] = jnp.zeros_like(mask[block][conv]["kernel"])
    return mask


def test_residual_blocks_are_bypassed_by_their_shortcuts():
    apply_fn, params = setup(RESNET, (8,))
    cases = [without(params, "BasicBlock_0/Conv_1"),  # block 0's first conv feeds nothing; the identity carries on
             without(params, "BasicBlock_1/Conv_1"),  # block 1's first conv dead; the 1x1 shortcut carries on
             without(params, "BasicBlock_1/Conv_1", "BasicBlock_1/Conv_2")]  # both branches of block 1 cut
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *cases)
    effective = effective_masks(apply_fn, params, stacked, (8,))
    diag = connectivity.report(jax.vmap(lambda m, e: connectivity.summary(m, e, params))(stacked, effective))
    live = {n.removesuffix("/kernel"): v["effective"] for n, v in diag["layers"].items()}
    kept = {n.removesuffix("/kernel"): v["kept"] for n, v in diag["layers"].items()}
    assert live["BasicBlock_0/Conv_0"] == [0, kept["BasicBlock_0/Conv_0"][1], 0]
    assert live["BasicBlock_1/Conv_0"] == [kept["BasicBlock_1/Conv_0"][0], 0, 0]
    assert live["Conv_0"] == [kept["Conv_0"][0]] * 2 + [0] and live["Dense_0"] == [6, 6, 0]
    assert diag["total"]["disconnected"] == [False, False, True]
    assert diag["total"]["collapsed_layers"] == [2, 2, 7]
    for s, mask in enumerate(cases):
        assert as_ids(one_seed(effective, s), RESNET_LAYERS) == effective_on_edges(
            resnet_edges(mask), {"in:0"}, {"logits:0", "logits:1"})


def test_resnet_random_masks_match_reachability_with_shortcuts():
    apply_fn, params = setup(RESNET, (8,))
    densities = [0.15, 0.25, 0.35, 0.5]
    stacked = random_masks(params, densities, seed=2)
    effective = effective_masks(apply_fn, params, stacked, (8,))
    for s in range(len(densities)):
        mask, got = (one_seed(t, s) for t in (stacked, effective))
        assert as_ids(got, RESNET_LAYERS) == effective_on_edges(resnet_edges(mask), {"in:0"}, {"logits:0", "logits:1"})


# ---- whole zoo, depth, API ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, feature_shape", [
    (models.create("lenet300_100", 3), (6,)), (models.create("conv2", 3), (8,)),
    (ConvNet((4, POOL, 4, 4), (), 3, use_batch_norm=True, global_pool=True), (6, 6, 2)),  # a tiny VGG
    (ResNet(4, ((4, 1), (6, 1)), 3), (6, 6, 1))])  # a tiny 2-D ResNet
def test_dense_mask_is_fully_effective_even_with_stats_that_would_kill_every_unit(model, feature_shape):
    """Running means of +100 make every eval-mode BatchNorm output negative; neutral statistics ignore them."""
    apply_fn, params = setup(model, feature_shape, shift_stats=100.0)
    out = connectivity.report(jax.jit(lambda p: connectivity.diagnose(apply_fn, p, masks.ones(p), feature_shape))(
        params))
    assert out["total"]["effective"] == out["total"]["kept"] == out["total"]["size"]
    assert all(v["effective_density"] == v["nominal_density"] == 1.0 for v in out["layers"].values())


def test_a_single_path_through_40_layers_is_found():
    """Width 16, 40 layers, fully connected except a chain 0 → 0 → … → 0 cut off from the rest: the chain's
    weights lie on exactly one path, the others on ~15^39 ≈ 2^152. Counting paths in float32 (SynFlow with
    0/1 weights, shifted or not) cannot give both a positive finite value; the saturated flow must."""
    width, depth = 16, 40
    apply_fn, params = setup(models.create("mlp", width, widths=(width,) * (depth - 1)), (width,))
    chain = np.ones((width, width), bool)
    chain[0, 1:] = chain[1:, 0] = False
    mask = jax.tree.map(lambda p, keep: jnp.asarray(chain) if keep else jnp.ones(p.shape, bool), params,
                        masks.prunable(params))
    mask["Dense_10"]["kernel"] = mask["Dense_10"]["kernel"].at[3].set(False)  # unit 3 of layer 10 feeds nothing
    effective = jax.jit(lambda m: connectivity.effective_mask(apply_fn, params, m, (width,)))(mask)
    for i in range(depth):
        got, kept = kernel(effective, f"Dense_{i}"), kernel(mask, f"Dense_{i}")
        expected = kept.copy()
        if i == 9:
            expected[:, 3] = False  # weights into the unit that feeds nothing
        np.testing.assert_array_equal(got, expected)
        assert got[0, 0]


def test_vmap_over_seeds_equals_each_seed_and_masks_are_subsets():
    apply_fn, params = setup(RESNET, (8,))
    stacked = random_masks(params, [0.2, 0.4, 0.6], seed=3)
    batched = effective_masks(apply_fn, params, stacked, (8,))
    one = jax.jit(lambda m: connectivity.effective_mask(apply_fn, params, m, (8,)))
    for s in range(3):
        mask = one_seed(stacked, s)
        single = one(mask)
        for a, b, m in zip(*map(jax.tree.leaves, (one_seed(batched, s), single, mask))):
            np.testing.assert_array_equal(a, b)
            assert not np.any(np.asarray(b) & ~np.asarray(m))


def test_apply_fn_that_is_not_a_flax_call_is_refused():
    _, params = setup(models.create("mlp", 3, widths=(5,)), (4,))
    plain = lambda p, x: x @ p["Dense_0"]["kernel"] @ p["Dense_1"]["kernel"]  # noqa: E731
    with pytest.raises(ConfigError, match="ran 0 Flax layers with a kernel"):
        connectivity.effective_mask(plain, params, masks.ones(params), (4,))
