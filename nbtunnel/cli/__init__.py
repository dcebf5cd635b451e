"""The command line (`nbtunnel`, `python -m nbtunnel`): parser, commands and what they run.

Modules: `app` (main: parse, dispatch), `parser` (every flag and argument type), `run_edge`,
`run_quick`, `run_named` (what runs until a signal), `serve` (signals, graceful stop),
`manage` + `apiclient` (control-plane commands over the edge's REST API), `logs`.
"""

from nbtunnel.cli.app import main

__all__ = ["main"]
