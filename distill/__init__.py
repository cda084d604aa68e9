"""Capability transfer and the training machinery every UNDO stage shares.

The engine (`distill.engine`) is the one training loop; stages (pretraining, unlearning, distillation,
relearning) hand it a model, a dataset and a loss.
"""
