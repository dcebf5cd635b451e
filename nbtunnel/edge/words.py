"""Random quick-tunnel hostnames made of words, like trycloudflare's."""

from __future__ import annotations

import secrets

_ADJECTIVES = (
    "able amber ancient arctic autumn bold brave breezy bright calm cheerful clever cosmic "
    "crimson crisp curious daring dawn eager early electric emerald fancy fearless gentle "
    "golden grand happy hidden honest humble jolly kind lively lucky lunar merry mighty "
    "misty modest noble polar proud quiet rapid royal rustic silent silver simple solar "
    "sunny swift tidy velvet vivid warm wild witty young zesty"
).split()
_NOUNS = (
    "anchor apple arrow aurora badger banjo beacon birch bison canyon cedar comet coral "
    "cricket delta dolphin eagle ember falcon fern fjord forest galaxy garden glacier harbor "
    "heron island jasmine kettle lagoon lantern maple meadow meteor mountain nebula oasis "
    "orchard otter panda pebble pine planet prairie quartz raven reef river rocket saddle "
    "sparrow spruce summit thistle tiger tundra valley violet walrus willow"
).split()
_VERBS = (
    "builds carries chases dances dreams drifts echoes flies follows glows greets grows "
    "hums jumps laughs leaps listens marches moves paints plays reads rests rides rises "
    "roams sails sings skips sleeps smiles spins swims thinks travels wanders waves writes"
).split()


def random_hostname(domain: str) -> str:
    """e.g. `brave-otter-sings-river.localhost` (about 2^24 combinations)."""
    words = [
        secrets.choice(_ADJECTIVES),
        secrets.choice(_NOUNS),
        secrets.choice(_VERBS),
        secrets.choice(_NOUNS),
    ]
    return "-".join(words) + "." + domain
