"""Running an evaluation: the runner, the run directory, the call store and its accounting.

The scheduler and the lanes that carry calls to models are in `rolebench_eval.scheduling`, the
model backends in `rolebench_eval.backends`."""
