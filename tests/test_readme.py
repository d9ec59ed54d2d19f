"""The README's Python examples run as written (each ```python block, in order, in one namespace)."""
import os
import re

import numpy as np

from jaxprune import masks

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", open(README).read(), flags=re.S | re.M)


def test_the_library_snippet_runs_and_prunes_to_the_sparsity_it_asks_for():
    blocks = python_blocks()
    assert blocks, "the README has no ```python block"
    namespace = {}
    for block in blocks:
        exec(compile(block, README, "exec"), namespace)
    params, mask = namespace["params"], namespace["mask"]
    kept, total = masks.count(mask, params)
    assert int(kept) == round(0.1 * total)
    for weights, keep in zip(masks.prunable_leaves(namespace["sparse"], params), masks.prunable_leaves(mask, params)):
        assert (np.asarray(weights)[~np.asarray(keep)] == 0).all()
