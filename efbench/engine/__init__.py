"""The loop that advances a batch of runs, its compiled path, and signals."""
