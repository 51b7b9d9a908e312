"""Rendering: one impact and its customer in, the subject, text and HTML of their notice out."""

from preaviso.render.notice import RenderedNotice, Renderer

__all__ = ["RenderedNotice", "Renderer"]
