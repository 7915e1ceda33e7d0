"""sift_fast."""
