"""The pai experiment with a scorer of your own: register it under a new name, then list it in ``methods``.

    python -m jaxprune.main --config=configs/custom_scorer.py --workdir=runs/custom_scorer

A scorer takes (apply_fn, params, batches, key, options) and returns scores shaped like params, larger = kept
(see jaxprune/pai.py); here |Σ_b ∇L_b(θ)|, SNIP's score without its factor θ.
"""
import jax
import jax.numpy as jnp

from configs import pai as pai_config
from jaxprune import pai


def gradient_magnitude(apply_fn, params, batches, key, options):
    grads = jax.vmap(lambda batch: jax.grad(pai.scoring_loss, argnums=1)(apply_fn, params, batch))(batches)
    return jax.tree.map(lambda g: jnp.abs(g.sum(axis=0)), grads)


pai.register("gradient_magnitude", gradient_magnitude)


def get_config():
    c = pai_config.get_config()
    c.methods = ("magnitude", "snip", "gradient_magnitude")
    return c
