"""Supernet, objectives and architecture steps: single path, shared weights, gradients, derivation."""
import math

import pytest
import torch

from nano_agent.complexity import complexity
from search_core.lut import Lut
from search_core.objectives import Constraint, CostModel, constrained_loss, objective
from nano_agent.space import SearchSpace
from search_core.strategies import (EvolutionStrategy, GradientStrategy, ReinforceStrategy,
                                    into_band)
from search_core.supernet import Supernet

pytestmark = pytest.mark.unit

SPACE = SearchSpace(0.5, 32, 10, 1)


def fake_lut(space):
    """A LUT whose op latencies grow with kernel and expansion (no timing needed for these tests)."""
    blocks = [{op.name: 0.0 if op.is_zero else 0.01 * op.kernel * op.expand for op in sb.ops}
              for sb in space.blocks]
    return Lut({"format": "edge-nas.lut", "version": 1, "space": space.config(),
                "fixed_ms": {"stem": 0.1, "first_block": 0.1, "last_block": 0.1, "head": 0.1},
                "blocks": blocks}, space)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("shared", [True, False])
def test_supernet_path_equals_the_exported_child(shared):
    net = Supernet(SPACE, shared_weights=shared)
    g = torch.Generator().manual_seed(1)
    x, _ = batch()
    net.train()
    for _ in range(3):  # move the BN statistics away from their defaults
        net(x, net.sample_path(g, uniform=True))
    net.eval()
    for _ in range(4):
        path = net.sample_path(g, uniform=True)
        child = net.export_child(path).eval()
        with torch.no_grad():
            assert torch.allclose(net(x, path), child(x), atol=1e-5)


def test_weight_step_touches_only_the_sampled_path():
    net = Supernet(SPACE, shared_weights=False)
    x, y = batch()
    path = net.sample_path(torch.Generator().manual_seed(0), uniform=True)
    torch.nn.functional.cross_entropy(net(x, path), y).backward()
    for block, index in zip(net.blocks, path):
        for name, candidate in block.candidates.items():
            has_grad = any(p.grad is not None for p in candidate.parameters())
            assert has_grad == (name == block.ops[index].name)


def test_the_largest_path_is_the_costliest_member():
    net = Supernet(SPACE)
    lut = fake_lut(SPACE)
    largest = net.largest_path()
    assert all(SPACE.blocks[b].ops[i].name == "k7_e6" for b, i in enumerate(largest))
    g = torch.Generator().manual_seed(0)
    assert all(lut.predict(largest) >= lut.predict(net.sample_path(g, uniform=True))
               for _ in range(50))


def test_the_smallest_path_is_the_cheapest_member():
    net = Supernet(SPACE)
    lut = fake_lut(SPACE)
    smallest = net.smallest_path()
    assert all(sb.ops[i].name == ("zero" if any(op.is_zero for op in sb.ops) else "k3_e3")
               for sb, i in zip(SPACE.blocks, smallest))
    g = torch.Generator().manual_seed(0)
    assert all(lut.predict(smallest) <= lut.predict(net.sample_path(g, uniform=True))
               for _ in range(50))


def test_candidates_share_weights():
    """k3 is the centre of the k7 kernel: changing only the centre changes the k3 path's output;
    changing only the k7 border leaves it alone."""
    net = Supernet(SPACE).eval()
    x, _ = batch()
    k3 = tuple(SPACE.op_index(i, "k3_e6") for i in range(20))
    h = net.first_block(net.stem(x))
    block = net.blocks[0]
    before = block(h, k3[0])
    with torch.no_grad():
        block.depthwise_conv.weight[:, :, 0, :] += 1.0  # the border row of the 7x7 kernel
        assert torch.equal(block(h, k3[0]), before)
        block.depthwise_conv.weight[:, :, 3, 3] += 1.0  # the centre
        assert not torch.allclose(block(h, k3[0]), before)


def test_derivation_follows_the_live_logits():
    net = Supernet(SPACE)
    first = net.derive()
    assert net.derive() is not first and net.derive() == first  # a new object, the same value
    with torch.no_grad():
        net.arch_logits[3][SPACE.op_index(3, "zero")] += 5.0
        net.arch_logits[0][SPACE.op_index(0, "k7_e6")] += 5.0
    second = net.derive()
    assert second.ops[3] == "zero" and second.ops[0] == "k7_e6"
    assert second.hash != first.hash
    assert first.ops[3] != "zero"  # the earlier object was not mutated


def test_batch_norm_recalibration_matches_the_path_statistics():
    net = Supernet(SPACE)
    g = torch.Generator().manual_seed(0)
    x, _ = batch(256)
    net.train()
    for _ in range(5):  # statistics become a mixture over random paths
        net(x, net.sample_path(g, uniform=True))
    path = net.sample_path(g, uniform=True)
    net.classifier.eval()  # no dropout in the reference
    with torch.no_grad():
        reference = net(x, path)  # train-mode BN: this batch's own statistics
        net.eval()
        mixed = net(x, path)
        net.recalibrate_batch_norm(path, [x])
        net.eval()
        calibrated = net(x, path)
    error = lambda out: float((out - reference).abs().mean())
    assert error(calibrated) < 0.2 * error(mixed)


def test_cost_model_matches_lut_and_complexity():
    lut = fake_lut(SPACE)
    costs = CostModel(SPACE, lut)
    g = torch.Generator().manual_seed(0)
    net = Supernet(SPACE)
    for _ in range(5):
        path = net.sample_path(g, uniform=True)
        arch = SPACE.architecture(path)
        metrics = costs.of_path(path)
        assert metrics["latency_ms"] == pytest.approx(lut.predict(path))
        assert metrics["params_m"] * 1e6 == pytest.approx(complexity(arch).params)
        assert metrics["memory_mb"] * 2 ** 20 == pytest.approx(complexity(arch).memory_bytes)


def test_objective_soft_and_hard():
    soft = Constraint("latency_ms", 10.0, -0.07, "soft")
    assert objective(0.9, {"latency_ms": 10.0}, [soft]) == pytest.approx(0.9)
    assert objective(0.9, {"latency_ms": 5.0}, [soft]) > 0.9 > objective(0.9, {"latency_ms": 20.0},
                                                                         [soft])
    hard = Constraint("latency_ms", 10.0, form="hard")
    assert objective(0.9, {"latency_ms": 5.0}, [hard]) == pytest.approx(0.9)
    assert objective(0.9, {"latency_ms": 20.0}, [hard]) == pytest.approx(0.45)
    both = [soft, Constraint("memory_mb", 2.0, -0.07, "soft")]
    assert objective(0.9, {"latency_ms": 10.0, "memory_mb": 4.0}, both) == \
        pytest.approx(0.9 * 2 ** -0.07)
    with pytest.raises(ValueError, match="negative"):
        Constraint("latency_ms", 10.0, 0.5)


def test_the_absolute_form_costs_the_same_under_and_over_the_target():
    """TuNAS's reward: a budget to use, not a floor to dive under."""
    absolute = Constraint("latency_ms", 10.0, -0.5)
    assert absolute.form == "absolute"  # the default
    assert objective(0.9, {"latency_ms": 10.0}, [absolute]) == pytest.approx(0.9)
    assert objective(0.9, {"latency_ms": 8.0}, [absolute]) == pytest.approx(0.8)
    assert objective(0.9, {"latency_ms": 12.0}, [absolute]) == pytest.approx(0.8)
    both = [absolute, Constraint("memory_mb", 2.0, -0.1, "soft")]
    assert objective(0.9, {"latency_ms": 8.0, "memory_mb": 4.0}, both) == \
        pytest.approx(0.9 * 2 ** -0.1 - 0.1)
    costs = CostModel(SPACE, fake_lut(SPACE))
    net = Supernet(SPACE)
    expected = float(costs.expected(net.probabilities())["latency_ms"].detach())
    for target, sign in ((2.0 * expected, -1), (0.5 * expected, 1)):
        for logits in net.arch_logits:
            logits.grad = None
        constrained_loss(torch.tensor(1.0), costs.expected(net.probabilities()),
                         [Constraint("latency_ms", target, -0.5)]).backward()
        # under the target the slowest op is pulled up, over it pushed down
        for sb, logits in zip(SPACE.blocks, net.arch_logits):
            slowest = SPACE.op_index(sb.index, "k7_e6")
            assert sign * float(logits.grad[slowest]) > 0


@pytest.mark.parametrize("form", ["mul", "add"])
def test_latency_loss_gradient_reaches_every_logit(form):
    net = Supernet(SPACE)
    costs = CostModel(SPACE, fake_lut(SPACE))
    expected = costs.expected(net.probabilities())
    loss = constrained_loss(torch.tensor(1.0), expected,
                            [Constraint("latency_ms", 0.5, -0.5, "soft")], form)
    loss.backward()
    for sb, logits in zip(SPACE.blocks, net.arch_logits):
        grad = logits.grad
        assert grad is not None and float(grad.abs().sum()) > 0
        # slower ops are pushed down: the largest op gets the largest (positive) gradient
        assert int(grad.argmax()) == SPACE.op_index(sb.index, "k7_e6")


def _gradient_strategy(net, constraints, seed=0):
    optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    return GradientStrategy(net, CostModel(SPACE, fake_lut(SPACE)), constraints, optimizer,
                            torch.Generator().manual_seed(seed))


def test_binary_gate_step_moves_only_the_sampled_pair():
    """Without a latency term only the two sampled ops get gradient, and the rescaling keeps the
    probabilities of every other op exactly where they were."""
    net = Supernet(SPACE)
    with torch.no_grad():
        for logits in net.arch_logits:
            logits.normal_()
        for block in net.blocks:  # as after the warm-up: no block is the identity any more
            block.project_bn.weight.fill_(1.0)
    strategy = _gradient_strategy(net, [])
    before = [p.detach().clone() for p in net.probabilities()]
    x, y = batch()
    strategy.step(x, y)
    after = [p.detach() for p in net.probabilities()]
    moved = 0
    for b, (p0, p1) in enumerate(zip(before, after)):
        changed = (p0 - p1).abs() > 1e-6
        assert int(changed.sum()) in (0, 2)
        moved += int(changed.sum()) == 2
        assert float(p1.sum()) == pytest.approx(1.0)
    assert moved >= 10


@pytest.mark.process
def test_gradient_search_with_a_tight_target_lowers_expected_latency():
    net = Supernet(SPACE)
    costs = CostModel(SPACE, fake_lut(SPACE))
    start = costs.expected(net.probabilities())["latency_ms"].item()
    strategy = _gradient_strategy(net, [Constraint("latency_ms", 0.3 * start, -0.5)])
    x, y = batch()
    for _ in range(30):
        strategy.step(x, y)
    assert costs.expected(net.probabilities())["latency_ms"].item() < 0.9 * start


@pytest.mark.process
def test_reinforce_prefers_faster_architectures_under_a_latency_penalty():
    net = Supernet(SPACE)
    with torch.no_grad():  # every path predicts class 0: accuracy 1, so the reward is latency alone
        net.classifier[1].bias[0] = 100.0
    costs = CostModel(SPACE, fake_lut(SPACE))
    start = costs.expected(net.probabilities())["latency_ms"].item()

    def metrics_of(arch):
        return costs.of_path(SPACE.choices(arch))

    optimizer = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    strategy = ReinforceStrategy(net, metrics_of, [Constraint("latency_ms", 0.3 * start, form="hard")],
                                 optimizer, torch.Generator().manual_seed(0), samples=4)
    x, _ = batch()
    for _ in range(30):
        stats = strategy.step(x, torch.zeros(len(x), dtype=torch.long))
    assert math.isfinite(stats["reward"]) and strategy.state_dict()["baseline"] is not None
    assert costs.expected(net.probabilities())["latency_ms"].item() < 0.9 * start


def test_evolution_keeps_its_best_and_only_feasible_children():
    """A toy fitness (how many blocks take their first op): the best score never falls (the
    survivors are kept), it rises over generations, and every child is one the table accepts
    (here: block 0 never takes op 1)."""
    net = Supernet(SPACE)
    g = torch.Generator().manual_seed(0)
    evolution = EvolutionStrategy(net, g)
    fitness = lambda path: float(sum(op == 0 for op in path))  # noqa: E731
    feasible = lambda path: path[0] != 1  # noqa: E731

    def draw():
        while True:
            path = net.sample_path(g, uniform=True)
            if feasible(path):
                return path

    best, seen = [], set()
    for _ in range(15):
        picked = evolution.generation(3, fitness, feasible, draw)
        assert len(picked) == 3 and len(evolution.population) == EvolutionStrategy.POPULATION
        assert all(feasible(path) for path in evolution.population)
        seen.update(evolution.population)
        best.append(sum(op == 0 for op in picked[0]))
    assert best == sorted(best) and best[-1] > best[0]
    restored = EvolutionStrategy(net, g)
    restored.load_state_dict(evolution.state_dict())
    assert restored.population == evolution.population


@pytest.mark.parametrize("fraction", [0.4, 0.6, 1.0, 1.3])
def test_a_path_is_moved_into_the_band_by_single_op_changes(fraction):
    """20 blocks of a skip and 6 ops of random costs, as the space's: a uniform path, far from a
    band at 40% of the mean, reaches it by single-op changes; a band below the cheapest path gets
    the cheapest path."""
    g = torch.Generator().manual_seed(int(fraction * 10))
    costs = [[0.02] + sorted(float(c) for c in torch.rand(6, generator=g) + 0.1)
             for _ in range(20)]
    predict = lambda path: 1.0 + sum(row[op] for row, op in zip(costs, path))  # noqa: E731
    mean = 1.0 + sum(sum(row) / len(row) for row in costs)
    band = (0.88 * fraction * mean, 0.98 * fraction * mean)
    for _ in range(5):
        start = tuple(int(op) for op in torch.randint(7, (20,), generator=g))
        moved = into_band(start, costs, predict, band, g)
        assert band[0] <= predict(moved) <= band[1], (fraction, predict(start), predict(moved))
        assert moved == into_band(moved, costs, predict, band, g)  # in the band: left as it is
    cheapest = predict([0] * 20)
    assert into_band(start, costs, predict, (0.5 * cheapest, 0.9 * cheapest), g) == (0,) * 20


def test_evolution_repairs_its_children_into_the_band(monkeypatch):
    """A population that the table refuses (block 0 at op 1) and no mutation: without repair no
    child is kept, with it every child is one the table accepts."""
    net = Supernet(SPACE)
    feasible = lambda path: path[0] != 1  # noqa: E731
    fitness = lambda path: float(sum(op == 0 for op in path))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    refused = [(1,) + tuple(net.sample_path(g, uniform=True)[1:])
               for _ in range(EvolutionStrategy.POPULATION)]
    monkeypatch.setattr(EvolutionStrategy, "MUTATION", 0.0)
    plain, repaired = EvolutionStrategy(net, g), EvolutionStrategy(net, g)
    plain.population, repaired.population = list(refused), list(refused)
    plain.generation(3, fitness, feasible, None)
    repaired.generation(3, fitness, feasible, None, repair=lambda path: (0,) + path[1:])
    assert not any(feasible(path) for path in plain.population)
    assert sum(feasible(path) for path in repaired.population) >= 1
    assert all(feasible(path) for path in repaired.population if path not in refused)
