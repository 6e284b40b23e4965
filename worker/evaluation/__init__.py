"""Evaluation of fine-tuned models: generating answers and scoring them."""
