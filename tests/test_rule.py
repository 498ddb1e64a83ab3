"""The rules that decide λ, on synthetic counts and sorted gradient magnitudes."""

import math

import pytest
import torch

from l1sparse.rule import (
    Bracket,
    between,
    controller_factor,
    exact_threshold,
    first_order_guess,
    propose,
    ramp_progress,
    scheduled_zero_fraction,
)


def test_cubic_schedule_starts_dense_ends_at_target_and_never_passes_it():
    values = [scheduled_zero_fraction(t / 100, 0.95) for t in range(101)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.95)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert max(values) <= 0.95 + 1e-12
    # cubic: most of the zeros come early (at half the ramp, 7/8 of the target)
    assert scheduled_zero_fraction(0.5, 0.8) == pytest.approx(0.8 * 7 / 8)
    assert scheduled_zero_fraction(0.5, 0.8, shape="linear") == pytest.approx(0.4)
    with pytest.raises(ValueError, match="'shape'"):
        scheduled_zero_fraction(0.5, 0.8, shape="exp")


def test_ramp_progress_clips_and_handles_an_empty_ramp():
    assert ramp_progress(10, 100, 0.2, 0.6) == 0.0
    assert ramp_progress(40, 100, 0.2, 0.6) == pytest.approx(0.5)
    assert ramp_progress(90, 100, 0.2, 0.6) == 1.0
    assert ramp_progress(30, 100, 0.3, 0.3) == 1.0 and ramp_progress(29, 100, 0.3, 0.3) == 0.0


def test_controller_raises_lambda_when_too_dense_lowers_it_when_too_sparse_and_clips():
    assert controller_factor(120, 100, gain=0.1, max_factor=1.5) == pytest.approx(1.2 ** 0.1)
    assert controller_factor(80, 100, gain=0.1, max_factor=1.5) == pytest.approx(0.8 ** 0.1)
    assert controller_factor(10_000, 1, gain=1.0, max_factor=1.02) == 1.02
    assert controller_factor(1, 10_000, gain=1.0, max_factor=1.02) == pytest.approx(1 / 1.02)
    # relative error: the same factor at 50 % and at 98 % zeros
    assert controller_factor(550, 500, gain=0.05, max_factor=2) == pytest.approx(
        controller_factor(22, 20, gain=0.05, max_factor=2))


def test_first_order_guess_is_between_the_kth_and_next_score():
    scores = torch.tensor([0.5, 8.0, 1.0, 4.0, 2.0])  # unsorted on purpose
    assert first_order_guess(scores, 2) == pytest.approx(math.sqrt(4.0 * 2.0))
    assert first_order_guess(scores, 5) == pytest.approx(0.25)  # below the smallest
    assert first_order_guess(torch.zeros(4), 2) == 0.0
    assert first_order_guess(torch.tensor([3.0, 0.0, 0.0]), 2) == 3.0  # k-th is zero


@pytest.mark.parametrize("k", [0, 1, 3, 6, 7])
def test_exact_threshold_leaves_exactly_k(k):
    scores = torch.tensor([0.3, 0.1, 0.9, 0.5, 0.7, 0.2, 0.05], dtype=torch.float64)
    assert int((scores > exact_threshold(scores, k)).sum()) == k


def test_between_is_the_geometric_mean_of_neighbours():
    g = torch.tensor([9.0, 4.0, 1.0])
    assert between(g, 1) == pytest.approx(6.0) and between(g, 2) == pytest.approx(2.0)
    assert between(g, 3) == pytest.approx(0.5)


def test_too_sparse_lowers_lambda_to_the_target_gamma_strictly_below_the_current():
    g = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    br = Bracket()
    # 1 nonzero, target 3: λ goes between γ_(3) = 2 and γ_(4) = 1
    assert propose(10.0, 1, 3, g, br, 1, max_step=None, memory=None) == pytest.approx(math.sqrt(2))
    assert br.sparse == (10.0, 1) and br.sparse_gamma is g
    # the target's γ is above the current λ: capped by the largest γ below λ
    br = Bracket()
    assert propose(3.0, 0, 1, g, br, 1, max_step=None, memory=None) == 2.0


def test_too_dense_steps_back_up_the_last_sparse_gamma_by_the_overshoot():
    g = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    br = Bracket(sparse=(10.0, 1), sparse_gamma=g)
    # 4 nonzeros for a target of 3: overshoot 1, so aim at the 2nd largest γ
    lam = propose(1.5, 4, 3, g, br, 2, max_step=None, memory=None)
    assert br.overshoot == 1 and br.dense == (1.5, 2)
    assert lam == pytest.approx(math.sqrt(4.0 * 2.0))


def test_a_proposal_outside_the_bracket_falls_back_to_its_geometric_middle():
    g = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    br = Bracket(dense=(1.0, 1), sparse=(1.2, 1))
    lam = propose(1.1, 0, 3, g, br, 2, max_step=None, memory=None)  # too sparse, proposes 1.41
    assert lam == pytest.approx(math.sqrt(1.0 * 1.1))  # the new sparse end is 1.1


def test_bracket_ends_expire_after_memory_iterations():
    br = Bracket(dense=(1.0, 1), sparse=(2.0, 1), sparse_gamma=torch.ones(2), overshoot=3)
    br.expire(5, memory=4)
    assert br.dense == (1.0, 1) and br.sparse == (2.0, 1)
    br.expire(6, memory=4)
    assert br.dense is None and br.sparse is None and br.sparse_gamma is None
    assert br.overshoot == 0


def test_max_step_damps_the_change():
    g = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5])
    assert propose(10.0, 1, 5, g, Bracket(), 1, max_step=1.4, memory=None) == pytest.approx(10 / 1.4)


# --------------------------------------------------------------------------- the paper's own rule

from l1sparse.rule import layers_within, median_inside, paper_bracket, paper_next_lambda  # noqa: E402


def test_paper_bracket_takes_the_closest_runs_on_each_side_and_their_extreme_lambdas():
    runs = [(1e-3, 24), (1e-7, 25_380), (1.44e-5, 14_644), (3.05e-5, 3_622)]
    assert paper_bracket(runs, 2000) == (3.05e-5, 1e-3)
    # ties in the count: the smallest λ above, the largest λ below
    runs = [(1e-3, 10), (5e-4, 10), (1e-7, 900), (2e-7, 900)]
    assert paper_bracket(runs, 100) == (2e-7, 5e-4)
    # a run on the target is on both sides
    assert paper_bracket([(1e-4, 100), (1e-3, 5)], 100) == (1e-4, 1e-4)
    assert paper_bracket([(1e-3, 5)], 100) == (None, 1e-3)


def test_median_inside_counts_only_values_strictly_inside_and_falls_back_to_the_midpoint():
    g = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 9.0], dtype=torch.float64)
    assert median_inside(g, 1.0, 4.0) == 2.5  # 2 and 3 inside; the ends excluded
    assert median_inside(g, 4.0, 0.5) == 2.0  # either order: 1, 2, 3 inside
    assert median_inside(g, 5.0, 8.0) == 6.5  # none inside
    assert median_inside(g, 0.0, 100.0) == 2.5


def test_paper_next_lambda_on_a_synthetic_bracket_and_gradient_set():
    # the authors' first update: the bracket (1e-7, 1e-3); 5 gradients, 3 inside it
    g = torch.tensor([2e-3, 5e-4, 4e-5, 1e-5, 5e-8], dtype=torch.float64)
    assert paper_next_lambda([(1e-3, 24), (1e-7, 25_380)], 2000, g) == pytest.approx(4e-5)
    # a new too-dense run at 4e-5 narrows the bracket to (4e-5, 1e-3): only 5e-4 is inside
    runs = [(1e-3, 24), (1e-7, 25_380), (4e-5, 3000)]
    assert paper_next_lambda(runs, 2000, g) == pytest.approx(5e-4)
    # nothing inside (6e-5, 8e-5): the midpoint
    runs = [(8e-5, 1900), (6e-5, 2100)]
    assert paper_next_lambda(runs, 2000, g) == pytest.approx(7e-5)
    with pytest.raises(ValueError, match="do not bracket the target 2000: no run is too dense"):
        paper_next_lambda([(1e-3, 24), (1e-4, 1500)], 2000, g)


def test_layers_within_is_relative_to_each_layer_target():
    assert layers_within([650, 1261, 950, 47], [650, 1200, 1000, 45], 0.05) == [
        True, False, True, True]
    with pytest.raises(ValueError, match="one value per layer"):
        layers_within([1, 2], [1, 2, 3], 0.1)


def test_the_device_first_order_guess_equals_the_host_one():
    from l1sparse.rule import first_order_guess, first_order_guess_tensor

    g = torch.Generator().manual_seed(0)
    for n, k in [(50, 1), (50, 10), (50, 50), (7, 3)]:
        scores = torch.rand(n, generator=g)
        scores[: n // 3] = 0.0
        assert float(first_order_guess_tensor(scores, k)) == pytest.approx(
            first_order_guess(scores, k), rel=1e-6)
    assert float(first_order_guess_tensor(torch.zeros(5), 2)) == 0.0
    bad = torch.tensor([1.0, float("nan"), 2.0])
    assert math.isnan(float(first_order_guess_tensor(bad, 1)))
