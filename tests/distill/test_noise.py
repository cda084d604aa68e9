import math

import pytest
import torch

from distill.models import build_model
from distill.noise import shrink_and_perturb, xavier_uniform
from unlearn.tasks.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_char_tokenizer()


def fresh(tok, seed=0):
    torch.manual_seed(seed)
    return build_model("gemma2-tiny", tok)


def test_alpha_zero_leaves_the_teacher_unchanged(tok):
    model, ref = fresh(tok), fresh(tok)
    shrink_and_perturb(model, alpha=0.0, beta=0.1, seed=3)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n


def test_alpha_one_beta_one_is_a_fresh_xavier_init(tok):
    model = fresh(tok)
    shrink_and_perturb(model, alpha=1.0, beta=1.0, seed=3)
    for name, p in model.named_parameters():
        if p.dim() == 1:
            assert torch.count_nonzero(p) == 0, name  # norm weights to 0: Gemma's (1 + w) is the identity
            continue
        bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
        assert p.abs().max() <= bound, name
        # Uniform on [-b, b]: mean 0, variance b^2 / 3 (up to sampling error on >= 16k draws).
        assert abs(p.mean().item()) < 0.02 * bound, name
        assert p.var().item() == pytest.approx(bound**2 / 3, rel=0.05), name


def test_partial_alpha_mixes_teacher_and_noise_exactly(tok):
    model, teacher = fresh(tok), fresh(tok)
    shrink_and_perturb(model, alpha=0.6, beta=0.1, seed=5)
    name = "model.layers.0.mlp.down_proj.weight"
    noise = xavier_uniform(tuple(teacher.get_parameter(name).shape), 5, name)
    expected = teacher.get_parameter(name) * 0.4 + 0.06 * noise
    assert torch.allclose(model.get_parameter(name), expected, atol=1e-7)


def test_seed_and_pattern_select_what_changes(tok):
    a, b, teacher = fresh(tok), fresh(tok), fresh(tok)
    touched = shrink_and_perturb(a, 0.5, 0.1, seed=1, pattern=r"mlp\.")
    shrink_and_perturb(b, 0.5, 0.1, seed=2, pattern=r"mlp\.")
    assert touched and all("mlp." in n for n in touched)
    assert torch.equal(a.get_parameter("model.embed_tokens.weight"), teacher.get_parameter("model.embed_tokens.weight"))
    assert not torch.equal(a.get_parameter(touched[0]), b.get_parameter(touched[0]))


def test_bad_settings(tok):
    with pytest.raises(ValueError, match="alpha must lie in"):
        shrink_and_perturb(fresh(tok), 1.5, 0.1, seed=0)
    with pytest.raises(ValueError, match="no parameter name matches"):
        shrink_and_perturb(fresh(tok), 0.5, 0.1, seed=0, pattern="nothing-like-this")


def tiny_llama(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a "trained" teacher: norms away from their init of 1
        for _name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model


def test_llama_at_alpha_one_is_a_fresh_init_of_its_own_architecture(tok):
    """Llama's RMSNorm scales by w (init 1): at alpha 1 its norms return to 1, not 0, and the logits live."""
    model = tiny_llama(tok)
    shrink_and_perturb(model, alpha=1.0, beta=1.0, seed=3)
    norms = [(n, p) for n, p in model.named_parameters() if p.dim() == 1]
    assert norms and all(torch.equal(p, torch.ones_like(p)) for _, p in norms), [n for n, _ in norms]
    logits = model(input_ids=torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.abs().max() > 0.1  # zeroed norms would give all-zero logits


def test_partial_alpha_moves_llama_norms_toward_one(tok):
    model, teacher = tiny_llama(tok), tiny_llama(tok)
    shrink_and_perturb(model, alpha=0.6, beta=0.1, seed=5)
    name = "model.layers.0.input_layernorm.weight"
    expected = teacher.get_parameter(name) * 0.4 + 0.6
    assert torch.allclose(model.get_parameter(name), expected, atol=1e-7)


def test_gemma_norms_go_to_zero_their_identity(tok):
    model, teacher = fresh(tok), fresh(tok)
    with torch.no_grad():
        for (_, p), (_, q) in zip(model.named_parameters(), teacher.named_parameters()):
            if p.dim() == 1:
                p.uniform_(-0.5, 0.5)
                q.copy_(p)
    shrink_and_perturb(model, alpha=0.25, beta=0.1, seed=5)
    name = "model.norm.weight"
    assert torch.equal(model.get_parameter(name), (teacher.get_parameter(name).float() * 0.75))


def test_a_weight_within_one_block_keeps_the_unblocked_draw(tok):
    """Block 0 is seeded by (seed, name) alone: weights of at most BLOCK elements (every weight of the
    arithmetic testbed) draw exactly what a whole-tensor draw from that generator gives."""
    from distill.noise import param_generator, xavier_bound

    model, teacher = fresh(tok), fresh(tok)
    shrink_and_perturb(model, alpha=1.0, beta=1.0, seed=7)
    for name, p in teacher.named_parameters():
        if p.dim() < 2:
            continue
        whole = torch.rand(tuple(p.shape), generator=param_generator(7, name)) * 2.0 - 1.0
        assert torch.equal(model.get_parameter(name), whole * xavier_bound(tuple(p.shape))), name


def test_blocks_draw_independently_and_cover_the_weight(tok, monkeypatch):
    """With small blocks a weight is a concatenation of per-block draws: each block from its own
    generator, none repeating another, the whole still uniform within the Xavier bound."""
    from distill import noise

    monkeypatch.setattr(noise, "BLOCK", 1000)
    model = fresh(tok)
    name = "model.layers.0.mlp.down_proj.weight"
    shape = tuple(model.get_parameter(name).shape)
    assert math.prod(shape) > 3000
    shrink_and_perturb(model, alpha=1.0, beta=1.0, seed=3)
    flat = model.get_parameter(name).detach().reshape(-1)
    for b in range(3):
        assert torch.equal(flat[b * 1000:(b + 1) * 1000], noise.xavier_block(shape, 3, name, b)), b
    assert not torch.equal(flat[:1000], flat[1000:2000])
    assert flat.abs().max() <= noise.xavier_bound(shape)
