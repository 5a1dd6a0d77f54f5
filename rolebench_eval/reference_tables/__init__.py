"""Published paper tables shipped with the package (read by `rolebench_eval.analysis.paper_tables`).

These JSON files are byte-identical copies of `results/reference/*.json` at the repository top; a
test keeps the two in step. Edit both, or copy results/reference/ over this folder.
"""
