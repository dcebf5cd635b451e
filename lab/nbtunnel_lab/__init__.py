"""The nbtunnel lab: an edge, connectors and an origin on loopback, watched and disturbed.

Import name ``nbtunnel_lab`` (the folder is ``lab/``); mitmproxy comes with the ``lab`` extra.
"""

from __future__ import annotations

from nbtunnel_lab.client import LabResponse
from nbtunnel_lab.faults import Fault, FaultError
from nbtunnel_lab.lab import Lab, LabConfig, LabConnector, LabError
from nbtunnel_lab.records import FlowTable, Record, RecordStore
from nbtunnel_lab.sequence import SequenceDiagram, SequenceError

__all__ = [
    "Fault",
    "FaultError",
    "FlowTable",
    "Lab",
    "LabConfig",
    "LabConnector",
    "LabError",
    "LabResponse",
    "Record",
    "RecordStore",
    "SequenceDiagram",
    "SequenceError",
]
