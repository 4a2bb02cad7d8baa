"""Organizations: the tree that consumes capacity, and the capacity subscriptions provide."""
