"""The benchmark suite: Preaviso measured from outside, next to raw baselines (``./dev bench``).

Everything here drives the engine as a user would (records on the upstream topics, a
``preaviso worker`` subprocess, an SMTP sink in its own process), so it measures any
tree: ``--tree DIR`` runs the worker from DIR's code.
"""
