"""Sandbox-only routes: move the emulator's clock, use Stripe's test payment methods.

Registered only when the service runs on the sandbox: with a real Stripe key
these paths do not exist (404).
"""
