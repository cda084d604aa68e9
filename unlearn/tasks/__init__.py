"""Synthetic tasks (arithmetic problems, character tokenizer) for unlearning experiments."""
