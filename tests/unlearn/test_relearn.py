import pytest

from unlearn.relearn import gap_closed, mean_over_seeds, relearning_area, strongest_attacker


def test_strongest_attacker_picks_the_best_lr_at_each_step():
    by_lr = {1e-4: [0.0, 0.1, 0.5, 0.6], 1e-3: [0.0, 0.4, 0.3, 0.9], 3e-3: [0.0, 0.2, 0.5, 0.1]}
    best, lrs = strongest_attacker(by_lr)
    assert best == [0.0, 0.4, 0.5, 0.9]
    # step 0 is the unattacked model; at step 2 two LRs tie and the smaller one is named
    assert lrs == [None, 1e-3, 1e-4, 1e-3]


def test_seeds_are_averaged_before_choosing_the_lr():
    # seed 1 of lr 1e-3 is lucky at step 1, but on average 1e-4 is the stronger attacker there
    curves = [{"lr": 1e-4, "seed": 0, "forget_accuracy": [0.0, 0.5]},
              {"lr": 1e-4, "seed": 1, "forget_accuracy": [0.0, 0.5]},
              {"lr": 1e-3, "seed": 0, "forget_accuracy": [0.0, 0.1]},
              {"lr": 1e-3, "seed": 1, "forget_accuracy": [0.0, 0.8]}]
    by_lr = mean_over_seeds(curves)
    assert by_lr[1e-3] == pytest.approx([0.0, 0.45])
    best, lrs = strongest_attacker(by_lr)
    assert best == pytest.approx([0.0, 0.5]) and lrs == [None, 1e-4]


def test_area_is_the_trapezoid_over_uneven_steps_divided_by_the_budget():
    # 0->10: (0+0.2)/2*10 = 1; 10->50: (0.2+0.6)/2*40 = 16; 50->100: (0.6+1)/2*50 = 40 -> 57/100
    assert relearning_area([0, 10, 50, 100], [0.0, 0.2, 0.6, 1.0]) == pytest.approx(0.57)
    assert relearning_area([0, 100], [1.0, 1.0]) == pytest.approx(1.0)
    assert relearning_area([0, 5, 10], [0.0, 0.0, 0.0]) == 0.0


@pytest.mark.parametrize("steps,acc", [([5, 10], [0.1, 0.2]), ([0, 10, 10], [0, 0.1, 0.2]), ([0], [0.0]),
                                       ([0, 10], [0.1])])
def test_area_refuses_malformed_curves(steps, acc):
    with pytest.raises(ValueError):
        relearning_area(steps, acc)


def test_gap_closed():
    assert gap_closed(0.8, 0.3, 0.1) == pytest.approx(5 / 7)
    assert gap_closed(0.8, 0.8, 0.1) == 0.0
    assert gap_closed(0.1, 0.05, 0.2) is None  # gold relearns more than unlearned: no gap to close


def test_gap_closed_on_cross_entropy_is_the_same_ratio_and_refuses_the_other_direction():
    # cross-entropy areas: the unlearned model relearns to a low CE (2.0), gold stays high (6.0)
    assert gap_closed(2.0, 4.5, 6.0, higher_is_capable=False) == pytest.approx(2.5 / 4.0)
    assert gap_closed(-2.0, -4.5, -6.0) == pytest.approx(gap_closed(2.0, 4.5, 6.0, higher_is_capable=False))
    assert gap_closed(6.0, 5.0, 2.0, higher_is_capable=False) is None  # gold relearns to a lower CE: no gap
    assert gap_closed(3.0, 4.0, 3.0, higher_is_capable=False) is None


def test_curves_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        mean_over_seeds([{"lr": 1e-3, "seed": 0, "forget_accuracy": [0, 1]},
                         {"lr": 1e-3, "seed": 1, "forget_accuracy": [0, 1, 1]}])
    with pytest.raises(ValueError, match="different lengths"):
        strongest_attacker({1e-3: [0, 1], 1e-4: [0, 1, 1]})
