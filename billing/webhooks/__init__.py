"""Stripe webhooks: verified, stored once in the inbox, applied on workers (effects re-read from Stripe)."""
