"""Where FrameRecords go: the per-frame CSV, the overlay video, the live window, the summary and
the plot. Sinks only read records; each one is closed (finalised) on every way out of a run."""
