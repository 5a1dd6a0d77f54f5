"""Jinja2 templates of the HTML reports (a package so the templates install with rolebench_eval)."""
