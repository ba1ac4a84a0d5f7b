"""The scripts the gate runs against a side's tree (copied out by sides.copy_worker, never imported from here).

wall.py serves an A/B gate's samples, callgrind.py counts instructions under valgrind; both import the side's
fastformer_bench through side_api.py, which also serves baseline revisions older than the gate.
"""
