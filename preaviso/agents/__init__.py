"""One thin agent per stage; the logic they call lives in pure modules beside them."""

from __future__ import annotations

from preaviso.streams.app import Pipeline


def register_all(pipe: Pipeline) -> None:
    from preaviso.agents import audience, bulk, deliver, directory, notify

    bulk.register(pipe, {**directory.stages(pipe), **notify.stages(pipe)}, notify.composer(pipe))
    audience.register(pipe)
    deliver.register(pipe)
