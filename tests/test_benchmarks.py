"""The benchmark scripts still run (each in its tiny --smoke mode, in-process), and the pieces they count with
agree with a definition: the hand FLOP count with XLA's, PyTorch's magnitude pruning with jaxprune's."""
import importlib
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune import irp, masks, models, train

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark script by module name (they import each other, so their folder goes on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def table_rows(output: str) -> list[list[str]]:
    """Cells of the rows of the first markdown table printed, header and separator excluded."""
    lines = output.split("\n| ", 1)[1].split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def medians(cell: str) -> float:
    """The median of a 'median [min, max]' cell."""
    return float(cell.split()[0])


def test_bench_seeds_smoke_prints_positive_rates_for_each_seed_count(bench, capsys):
    bench("bench_seeds").main(["--smoke"])
    output = capsys.readouterr().out
    rows = table_rows(output)
    assert [row[0] for row in rows] == ["1", "2"]
    for row in rows:
        assert all(medians(cell) > 0 for cell in row[1:7])  # devices, 3 x seed-steps/s, 2 ratios to the loop
        cpu_us = [float(m) for m in re.findall(r"([0-9.]+) \[", row[7])]  # CPU-µs per seed-step of each
        assert len(cpu_us) == 3 and min(cpu_us) > 0
    xla, hand = map(float, re.search(r"XLA ([0-9.]+) M, hand count of the matmuls ([0-9.]+) M", output).groups())
    assert hand <= xla  # XLA also counts the elementwise work (ReLU, softmax, Adam)


def test_hand_matmul_count_matches_xla_on_a_forward_backward_pass(bench):
    """2·B·(3P − d·w₁) against XLA's count of value_and_grad of a wide MLP, where matmuls dominate."""
    model = models.create("mlp", 10, widths=(256, 256))
    x = jnp.ones((32, 64))
    params, _ = train.init_variables(model, jax.random.key(0), x[0])
    loss = lambda p: 0.5 * jnp.sum(model.apply({"params": p}, x) ** 2)  # noqa: E731
    xla = jax.jit(jax.grad(loss)).lower(params).compile().cost_analysis()["flops"]
    hand = bench("bench_seeds").matmul_flops(params, batch_size=32)
    assert hand == 2 * 32 * (3 * (64 * 256 + 256 * 256 + 256 * 10) - 64 * 256)
    assert hand <= xla <= 1.02 * hand


def test_bench_irp_torch_smoke_prints_every_implementation(bench, capsys):
    module = bench("bench_irp_torch")
    module.main(["--smoke"])
    names = [row[0] for row in table_rows(capsys.readouterr().out)]
    expected = ["JAX vmapped (run_rounds, all seeds)", "JAX per-seed loop (run_rounds, 1 seed)"]
    if module.import_torch() is not None:
        expected += [f"PyTorch per-seed loop, {t} thread(s)" for t in sorted({module.os.cpu_count(), 1}, reverse=True)]
    assert names == expected


def test_torch_magnitude_prune_keeps_the_same_weights_as_jaxprune(bench):
    torch = pytest.importorskip("torch")
    module = bench("bench_irp_torch")
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(6, 5)).astype(np.float32)},
              "b": {"kernel": rng.normal(size=(5, 3)).astype(np.float32)}}
    mask = {"a": {"kernel": rng.random((6, 5)) < 0.7}, "b": {"kernel": rng.random((5, 3)) < 0.7}}
    expected = irp.magnitude_prune(jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, mask), 0.4)
    # torch.nn.Linear stores kernels transposed ([out, in]); global pruning does not depend on the layout.
    kernels = [torch.from_numpy(params[k]["kernel"].T.copy()) for k in ("a", "b")]
    torch_mask = [torch.from_numpy(mask[k]["kernel"].T.copy()) for k in ("a", "b")]
    got = module.torch_magnitude_prune(torch, kernels, torch_mask, 0.4)
    for name, kept in zip(("a", "b"), got):
        np.testing.assert_array_equal(kept.numpy().T, np.asarray(expected[name]["kernel"]))
    assert sum(int(k.sum()) for k in got) == round(0.4 * (30 + 15))
    assert masks.density(expected, params) == pytest.approx(sum(int(k.sum()) for k in got) / 45)


def test_bench_gpu_irp_smoke_prints_a_round_per_model(bench, capsys):
    bench("bench_gpu_irp").main(["--smoke"])
    rows = table_rows(capsys.readouterr().out)
    assert [row[:2] for row in rows] == [["mlp", "2"]]
    assert float(rows[0][4]) > 0 and float(rows[0][6]) > 0


def test_bench_stop_rules_smoke_prints_every_candidate_rule(bench, capsys):
    module = bench("bench_stop_rules")
    module.main(["--smoke"])
    rows = table_rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == list(module.CANDIDATES)
    for r in rows:  # 3 networks (dense, random at 0.5) x 2 seeds = 4; a rule fires at or before the last epoch
        assert 0 <= int(r[1]) <= 4 and 1 <= float(r[2]) <= 6


def test_stopping_epoch_reads_the_rule_off_a_history(bench):
    module = bench("bench_stop_rules")
    rule = module.mem.StopRule(0.01, 1, 3, 0.0)
    assert module.stopping_epoch(rule, np.array([2.0, 1.5, 1.2, 1.195, 1.0]), np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == 4
    assert module.stopping_epoch(rule, np.array([2.0, 1.5, 1.0]), np.array([0.1, 0.2, 0.3])) is None


def test_bench_toy_masks_smoke_gives_rates_and_equal_masks(bench, capsys):
    rates = bench("bench_toy_masks").main(["--smoke"])
    assert rates["vmapped"] > 0 and rates["loop"] > 0
    assert "ratio vmapped / loop" in capsys.readouterr().out
