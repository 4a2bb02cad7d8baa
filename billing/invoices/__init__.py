"""A billing account's invoices and previews of what a change would bill."""
