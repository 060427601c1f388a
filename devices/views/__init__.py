"""HTML views of the devices app, one module per area."""
