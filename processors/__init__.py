"""Pure dialogue logic: the Rasa-compatible tracker fold and its queries (no IO, no clock)."""

from processors.domain import Domain, SlotDefinition
from processors.queries import Dialogue, EventVerbosity
from processors.tracker import DialogueStateTracker, apply, fold

__all__ = [
    "Dialogue",
    "DialogueStateTracker",
    "Domain",
    "EventVerbosity",
    "SlotDefinition",
    "apply",
    "fold",
]
