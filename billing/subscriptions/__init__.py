"""Subscriptions of a billing account (Stripe Subscriptions)."""
