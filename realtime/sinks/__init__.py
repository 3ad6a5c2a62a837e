"""Where FrameRecords go: one :class:`~realtime.sinks.base.Sink` per output, each in its own module --
the per-frame CSV (``csv_sink``), the overlay video (``video``), the live window (``window``), the
nerve masks (``masks``), the truth score (``truth``), the summary and plot (``summary``) -- and the
overlay they share (``overlay``). :func:`realtime.outputs.output_sinks` assembles them for a command."""
