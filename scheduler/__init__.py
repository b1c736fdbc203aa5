"""The scheduler process: one leader runs the jobs of one registry (materialize, batch-predict, check-skew).

scheduler.registry describes jobs, scheduler.jobs builds Tandem's registry (`default_jobs`),
scheduler.job_runner runs them (retries, no self-overlap, requested runs), scheduler.app puts them on
APScheduler, scheduler.entry is the hand-off from APScheduler's persisted jobs to the runner,
scheduler.leader holds the leader lease (scheduler.attempt bounds each job attempt) and scheduler.runner ties these together until stopped.
"""
