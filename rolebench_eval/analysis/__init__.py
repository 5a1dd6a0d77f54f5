"""Analysing runs: statistics, comparisons, paper tables, the leaderboard and the reports.

Nothing here makes a model call; it reads what the running side wrote."""
