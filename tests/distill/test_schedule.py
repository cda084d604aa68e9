import pytest

from distill.schedule import lr_at


def test_warmup_then_cosine_to_min():
    lrs = [lr_at(s, 100, 1.0, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_constant_and_linear():
    assert lr_at(50, 100, 2.0, 0, 0.0, "constant") == 2.0
    assert lr_at(50, 100, 2.0, 0, 0.0, "linear") == pytest.approx(1.0)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown LR schedule 'step'"):
        lr_at(0, 10, 1.0, 0, 0.0, "step")
