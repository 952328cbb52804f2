"""Application layer: the recipes' runner, run folders and reports, figures, and the CLI."""
