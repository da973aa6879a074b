"""Evaluation: val_bpb byte accounting (bpb), plain and sliding-window scoring (evaluate), scoring an
artifact (artifact_eval). Submodules are imported explicitly; this package imports nothing eagerly."""
