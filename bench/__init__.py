"""`make bench`: the quality bars of DESIGN.md section 7, measured. See bench/run.py."""
