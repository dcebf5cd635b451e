"""How a `Tunnel` shows itself in a kernel: the notebook layer plugs its panel into the API.

`nbtunnel.api` never imports the notebook layer; instead `install()` (run by `import nbtunnel`'s
lazy names and by `%load_ext nbtunnel`) adds `render` to `Tunnel._repr_mimebundle_`. This module
imports neither IPython nor ipywidgets until a tunnel is actually displayed inside a kernel.
"""

from __future__ import annotations

import sys
from typing import Any

from nbtunnel.api.tunnel import Tunnel, add_renderer


def in_kernel() -> bool:
    """True inside an ipykernel shell (never imports IPython itself)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def render(tunnel: Tunnel) -> dict[str, Any]:
    """The widget's MIME data inside a kernel; nothing elsewhere (terminals get the text)."""
    if not in_kernel():
        return {}
    try:
        from nbtunnel.notebook.widget import widget_bundle
    except ImportError:  # ipywidgets not installed: the text status is all there is
        return {}
    return widget_bundle(tunnel)


def install() -> None:
    add_renderer(render)
