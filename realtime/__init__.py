"""Frames -> measurements: sources, the streaming pipeline, post-processing, morphometry,
tracking and sinks. Imports ``engines`` and ``train``, never the other way round."""
