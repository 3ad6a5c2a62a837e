"""One clip through the streaming loop exactly as it runs live, for the benchmarks that score clips.

``mn-presence --clips`` (:mod:`benchmarks.presence`) and ``python -m benchmarks.window_bench`` both
animate stills (``animate:``) or play the phantom through :class:`realtime.pipeline.Pipeline` with
batch 1, no pacing (so no frame is dropped and every setting sees the same frames), a tracker with
the presence gate and confirmation they choose, the window policy and the temporal fusion: this is
that one set-up, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Callable

from common.errors import UserError
from realtime.cli_common import AREA_STEP_DEFAULT as DEFAULT_AREA_STEP  # mn-live's --area-step (a light import)
from realtime.fusion import DEFAULT_MOTION  # a light import too

DEFAULT_FPS = 24.0


def stream_clip(engine: Any, spec: str, frames: int, on_record: Callable[[Any], None], *, seed: int = 0,
                window: str = "tracked", fusion: float | None = None, presence: str = "on",
                confirm_frames: int | None = None, fps: float = DEFAULT_FPS, name: str | None = None,
                appearance: str | None = None, area_step: float | None = DEFAULT_AREA_STEP,
                presence_refresh: float | None = None, fusion_motion: str = DEFAULT_MOTION,
                **source_options: Any) -> None:
    """Run ``frames`` frames of the source ``spec`` (any ``open_source`` spec; generated sources use
    ``seed``) through the pipeline, handing every :class:`~realtime.record.FrameRecord` to ``on_record``.

    ``window``: ``--window`` (``tracked`` or ``localiser``); ``fusion``: ``--fusion``'s weight, or None for
    none; ``presence``: ``--presence``; ``confirm_frames``: ``--confirm`` (None: its default for video,
    :data:`realtime.tracker.DEFAULT_CONFIRM_FRAMES`); ``fps``: the tracker's rate; ``appearance``:
    ``--appearance`` (None: the one that belongs to the engine's model file); ``source_options``: the source
    kind's own (``compression_period_s`` for ``animate:``); ``area_step``: ``--area-step`` (None: off);
    ``presence_refresh``: ``--presence-refresh`` in seconds (None: off); ``fusion_motion``: ``--fusion-motion``.

    Raises:
        UserError: the run did not end well (named ``name``, default the spec, with the pipeline's reason).
        KeyboardInterrupt: Ctrl-C ended the clip (the pipeline ends a run cleanly on it): the benchmark stops
            instead of scoring a clip cut short and going on with the next.
    """
    from realtime.cli_common import refresh_frames
    from realtime.fusion import make_fusion
    from realtime.pipeline import Pipeline, PipelineConfig
    from realtime.presence import gated_model_file, make_presence_gate
    from realtime.sinks.base import Callback
    from realtime.sources import open_source
    from realtime.tracker import DEFAULT_CONFIRM_FRAMES, Tracker
    from realtime.window_policy import make_window_policy

    gate = make_presence_gate(presence, appearance_model=appearance, model_file=gated_model_file(engine))
    tracker = Tracker(None, fps, presence=gate,
                      confirm_frames=DEFAULT_CONFIRM_FRAMES if confirm_frames is None else confirm_frames,
                      area_step=area_step, refresh_frames=refresh_frames(presence_refresh, fps))
    config = PipelineConfig(batch=1, window=make_window_policy(window),
                            fusion=make_fusion(fusion, motion=fusion_motion) if fusion is not None else None)
    result = Pipeline(engine, tracker, [Callback(on_record)], config).run(
        open_source(spec, realtime=False, seed=seed, frames=frames, **source_options))
    if result.interrupted:
        raise KeyboardInterrupt
    if result.exit_code != 0:
        raise UserError(f"{name or spec}: the clip failed ({result.reason})")
