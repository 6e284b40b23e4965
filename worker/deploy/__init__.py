"""Exports of trained models: adapters, merged models and their model cards."""
