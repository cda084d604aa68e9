import torch
import torch.nn.functional as F

from distill.data import IGNORE_INDEX, collate
from distill.objective import CausalLMObjective, count_targets, token_cross_entropy


def test_summed_cross_entropy_matches_the_mean_times_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, 4, 5], [1, 2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    n = count_targets(labels)
    assert n == 4 + 1
    mean = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(token_cross_entropy(logits, labels), mean * n)


class Fixed(torch.nn.Module):
    """A 'model' with fixed logits, to check the objective's normalisation by global totals."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"logits": self.logits[: input_ids.size(0), : input_ids.size(1)]})()


def test_loss_is_a_share_of_the_step_mean():
    torch.manual_seed(0)
    batch = collate([{"input_ids": [1, 5, 6, 7]}, {"input_ids": [1, 8]}], pad_id=0)
    obj = CausalLMObjective()
    assert obj.count(batch) == {"ce": 3 + 1}
    model = Fixed(torch.randn(2, 4, 12))
    loss, parts = obj(model, batch, {"ce": 10.0})  # 10 targets over the whole step, 4 of them here
    assert torch.allclose(loss, parts["ce"] / 10.0)
    assert torch.allclose(parts["ce"], token_cross_entropy(model.logits, batch["labels"]))
