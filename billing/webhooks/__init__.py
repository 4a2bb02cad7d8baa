"""Stripe webhooks: verified, processed once, effects re-read from Stripe."""
