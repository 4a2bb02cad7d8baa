"""Billing accounts: a workspace's Stripe customers."""
