"""Marshmallow shapes of the published contract: they validate what comes in,
reshape Stripe's objects into what goes out, and generate /openapi.json."""
