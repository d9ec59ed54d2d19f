"""The README's Python examples run as written (each ```python block, in order, in one namespace), and every
relative link and image in README.md and docs/*.md points at a file that exists (and, with a #fragment, at a
heading of that file)."""
import glob
import os
import re

import numpy as np
import pytest

from jaxprune import masks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
PAGES = [README, *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


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


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    text = FENCE.sub("", open(path).read())
    return {anchor(h) for h in re.findall(r"^#+ (.*)$", text, flags=re.M)}


def relative_links(path: str) -> list[str]:
    text = FENCE.sub("", open(path).read())
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # not http:, mailto:, …


def test_anchor_follows_github():
    assert anchor("More PaI methods: iterative SNIP, FORCE, ProsPr, NPB; effective-sparsity targets") == (
        "more-pai-methods-iterative-snip-force-prospr-npb-effective-sparsity-targets")
    assert anchor("IRP survival counts (`configs/irp.py`)") == "irp-survival-counts-configsirppy"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_and_image_resolves(page):
    broken = []
    for target in relative_links(page):
        file, _, fragment = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(resolved):
            broken.append(f"{target}: no file {os.path.relpath(resolved, REPO)}")
        elif fragment and resolved.endswith(".md") and fragment not in anchors(resolved):
            broken.append(f"{target}: no heading #{fragment} in {os.path.relpath(resolved, REPO)}")
    assert not broken, broken


def test_the_link_check_can_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) ![img](gallery/none.png) [bad](#nowhere)\n"
                    "```\n[in a code block](ignored.md)\n```\n[web](https://example.org)\n")
    assert relative_links(str(page)) == ["#title", "missing.md", "gallery/none.png", "#nowhere"]
    assert anchors(str(page)) == {"title"}
