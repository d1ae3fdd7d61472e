"""Logbooks, and the stores that keep them.

A logbook records the progress of a piece of work in flow details and atom
details; a job on a board may carry one. Open a store by URL with
:func:`connect`, for instance ``connect("memory://")``.
"""

from __future__ import annotations

from ._connect import connect
from .base import BookStore
from .models import AtomDetail, FlowDetail, LogBook

__all__ = ["AtomDetail", "BookStore", "FlowDetail", "LogBook", "connect"]
