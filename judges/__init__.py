"""Judge plugins: prompt assembly, parsing and aggregation for LLM judges."""
