"""Training: process setup (dist), the step (step), the loop (trainer), checkpoints, the main job (job), reports."""
