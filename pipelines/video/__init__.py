"""The video product: the staged vad pipeline (extract, train, score, eval), its run folders, CLI, plots and report."""
