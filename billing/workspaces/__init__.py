"""Workspaces (the tenants) and their members."""
