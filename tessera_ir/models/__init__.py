"""Built-in model configurations (tiny Gemmas with seeded random weights)."""
