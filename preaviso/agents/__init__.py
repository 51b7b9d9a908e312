"""One thin agent per stage; the logic they call lives in pure modules beside them."""

from __future__ import annotations

from preaviso.streams.app import Pipeline


def register_all(pipe: Pipeline) -> None:
    from preaviso.agents import audience, deliver, directory, notify

    directory.register(pipe)
    audience.register(pipe)
    notify.register(pipe)
    deliver.register(pipe)
