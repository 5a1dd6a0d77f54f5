"""RoleBench (RoleLLM, arXiv:2310.00746): data loading, role prompts and ROUGE-L metrics."""
