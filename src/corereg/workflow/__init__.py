"""Workflow concepts, above the registration, training and evaluation code they drive.

* :mod:`corereg.workflow.jobs`: the configuration resolved into runs, paths and the
  specification of every Snakemake job (:class:`~corereg.workflow.jobs.Plan`).
* :mod:`corereg.workflow.costs`: the measured cost model (``workflow/costs.yaml``) that
  predicts each job's time and memory.
* :mod:`corereg.workflow.compute_plan`: ``corereg plan``, the compute plan of a
  configuration (jobs, hours, GPU-hours, memory, disk).
"""
