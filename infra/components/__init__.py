"""Constructs, one per concern; the stacks wire them together."""
