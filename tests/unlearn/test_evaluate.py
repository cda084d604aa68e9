import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from unlearn.evaluate import greedy_generate, report, score
from unlearn.tasks.arithmetic import eval_problems
from unlearn.tasks.tokenizer import build_char_tokenizer


class Oracle(torch.nn.Module):
    """Answers each problem correctly, except for the ops in `wrong`, where it answers 0.

    It reads its (left-padded) input like a real causal LM: only positions the attention mask
    keeps, and predicts the next character of " <answer><eos>" after the prompt.
    """

    def __init__(self, tok, problems, wrong=()):
        super().__init__()
        self.tok = tok
        self.answers = {p.prompt: ("0" if p.op in wrong else str(p.answer)) for p in problems}

    def forward(self, input_ids, attention_mask, position_ids=None):
        logits = torch.zeros(input_ids.size(0), input_ids.size(1), len(self.tok))
        for i, (row, mask) in enumerate(zip(input_ids, attention_mask)):
            text = self.tok.decode(row[mask.bool()].tolist()[1:])  # drop <bos>
            prompt = next(p for p in self.answers if text.startswith(p))
            target = " " + self.answers[prompt]
            done = len(text) - len(prompt)
            nxt = self.tok.eos_token_id if done >= len(target) else self.tok.convert_tokens_to_ids(target[done])
            logits[i, -1, nxt] = 1.0
        return type("Out", (), {"logits": logits})()


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def test_perfect_and_partly_wrong_models_score_as_expected(tok):
    problems = eval_problems("+,-,*,/", n_per_format=6)
    perfect = score(Oracle(tok, problems), tok, problems, batch_size=7)
    assert perfect["accuracy"] == {"+": 1.0, "-": 1.0, "*": 1.0, "/": 1.0}
    assert perfect["retain_accuracy"] == 1.0 and perfect["forget_accuracy"] == 1.0
    assert perfect["counts"]["* word"] == 6
    forgetful = score(Oracle(tok, problems, wrong=("*", "/")), tok, problems, batch_size=5)
    assert forgetful["retain_accuracy"] == 1.0
    assert forgetful["forget_accuracy"] == 0.0
    assert forgetful["word_accuracy"]["*"] == 0.0 and forgetful["equation_accuracy"]["+"] == 1.0


def test_rank_shards_cover_every_problem_once(tok):
    # Without a process group the all-reduce is a no-op, so each rank's counts are its own shard.
    problems = eval_problems("+,*", n_per_format=5)  # 20 problems over 3 ranks: 7, 7, 6 (+1 repeat)
    shards = [score(Oracle(tok, problems), tok, problems, rank=r, world=3) for r in range(3)]
    total = sum(sum(s["counts"].values()) for s in shards)
    assert total == len(problems)


def test_greedy_generate_respects_left_padding(tok):
    problems = eval_problems("+", n_per_format=2)
    prompts = [[tok.bos_token_id] + tok.encode(p.prompt) for p in problems]
    out = greedy_generate(Oracle(tok, problems), prompts, 4, tok.pad_token_id, "cpu")
    for p, row in zip(problems, out):
        expected = " " + str(p.answer)
        assert tok.decode(row.tolist()[: len(expected)]) == expected


@pytest.mark.parametrize("window", [4096, 8])
def test_cached_decoding_matches_full_recomputation(tok, window):
    # A random Gemma-2 (sliding and global layers; window 8 is shorter than the prompts): the key/value
    # cache must reproduce the tokens of re-running the whole left-padded sequence at every step.
    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=window,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = Gemma2ForCausalLM(config).eval()
    problems = eval_problems("+,*", n_per_format=4)  # equations and word problems: very unequal lengths
    prompts = [[tok.bos_token_id] + tok.encode(p.prompt) for p in problems]
    cached = greedy_generate(model, prompts, 6, tok.pad_token_id, "cpu")
    full = greedy_generate(model, prompts, 6, tok.pad_token_id, "cpu", use_cache=False)
    assert cached.shape == (len(prompts), 6)
    assert torch.equal(cached, full)
    assert len(set(map(tuple, cached.tolist()))) > 1  # not a degenerate constant output


def test_report_means_over_the_ops_present():
    r = report({("+", "equation"): 3, ("-", "equation"): 1}, {("+", "equation"): 4, ("-", "equation"): 4})
    assert r["accuracy"] == {"+": 0.75, "-": 0.25}
    assert r["retain_accuracy"] == 0.5 and r["forget_accuracy"] is None
