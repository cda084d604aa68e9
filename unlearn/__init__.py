"""Toolkit for LLM unlearning research."""
