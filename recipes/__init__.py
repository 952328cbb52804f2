"""The recipes: one script per documented experiment (run them with `robustkit run NAME`)."""
