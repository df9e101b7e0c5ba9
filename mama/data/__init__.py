"""Datasets: listing videos (`make_samples`), reading frames, clips and the clip sampler."""
