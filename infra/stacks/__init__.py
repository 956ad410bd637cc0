"""Stacks: one per deployable unit (registry, environment, GitHub OIDC)."""
