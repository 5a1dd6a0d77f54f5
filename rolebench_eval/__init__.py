"""rolebench-eval: an evaluation harness for role-playing language models."""

__version__ = "0.1.0"
