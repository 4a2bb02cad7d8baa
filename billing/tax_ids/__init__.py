"""A billing account's tax IDs (a sub-resource: the account's own shape stays as published)."""
