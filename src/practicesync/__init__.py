"""practicesync: mirror a practice's patient list and actioned results, and contact patients safely."""
