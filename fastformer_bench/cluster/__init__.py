"""Sweeps on a cluster through submitit (``run --executor slurm|local``): the points not yet stored are split into
shards, submitted as one job array, each job measuring its shard into its own ``points.<job>.jsonl``.

submit.py is the submitting process, shard.py the job, state.py what the submitter records and reads of its jobs,
watch.py progress and the end-of-array summary.
"""
