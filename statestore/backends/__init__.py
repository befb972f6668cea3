"""Storage backends. Each one implements only the private primitives of its tier's base class."""
