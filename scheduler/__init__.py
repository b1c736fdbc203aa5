"""The APScheduler process: materialize, batch-predict and check-skew jobs (issue 3 fills it)."""
