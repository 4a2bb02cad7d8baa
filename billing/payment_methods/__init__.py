"""A billing account's payment methods (card data never passes through us)."""
