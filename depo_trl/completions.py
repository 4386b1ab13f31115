"""The text of a completion, as reward functions read it: shared by ``rewards`` and ``graded_tasks``.

A completion is a string (standard datasets) or a list of ``{"role": ..., "content": ...}`` messages
(conversational ones); only the assistant's messages count.
"""

from __future__ import annotations


def completion_text(completion) -> str:
    """The text of one completion, standard (``str``) or conversational (list of messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(completion_text(message) for message in completion if _is_assistant(message))
    return str(completion)


def _is_assistant(message) -> bool:
    return not isinstance(message, dict) or message.get("role", "assistant") == "assistant"
