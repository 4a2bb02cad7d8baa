"""The billing API: tenancy, billing accounts and their Stripe objects."""
