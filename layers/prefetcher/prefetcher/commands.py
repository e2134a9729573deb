"""How many images one pull command may carry, so that what a node reports always arrives whole.

The SSM agent keeps the first 24,000 characters of a step's standard output (bytes, in fact:
it slices the byte string) and ends a longer one with `--output truncated--`; a result line
past the cut is lost, and the image it describes would be recorded as something it was not.
The node agent's lines have a bounded length (agent/prefetch.sh: names from the document's
patterns, numbers, an error of at most MAX_ERROR printable bytes without escapes), so the
senders cut their images into commands whose worst-case output fits, with room to spare. The
same cut keeps a command's `Images` parameter, and so the document plus its parameters, far
below SendCommand's 64 KB (`MaxDocumentSizeExceeded`; tests/template checks the document's size).
"""

from __future__ import annotations

from prefetcher.refs import IMAGES_MAX_LENGTH, MAX_IMAGES_PER_COMMAND, ImageRef

STDOUT_LIMIT = 24_000  # what GetCommandInvocation keeps of a step's standard output
TRUNCATED = "--output truncated--"
MAX_ERROR = 300  # agent/prefetch.sh: MAX_ERROR (tests/unit/test_commands.py keeps them equal)
# The result line around its variable parts:
# {"image":"","digest":"","tag":"","outcome":"","bytes":,"seconds":,"error":"","pinned":false}
# and a newline.
_LINE_FRAME = len('{"image":"","digest":"","tag":"","outcome":"","bytes":,"seconds":,"error":"","pinned":false}\n')
_OUTCOME_MAX = len("skipped-disk")
_BYTES_MAX = 19  # a 64-bit byte count
_SECONDS_MAX = 12  # seconds with three decimals, up to the longest execution timeout
# A fatal line ({"fatal":"..."}) may come after the result lines of a run that stopped.
FATAL_LINE_MAX = len('{"fatal":""}\n') + MAX_ERROR
# The budget of one command's result lines: the agent's limit, less its suffix, a fatal line,
# and a margin for what no one foresaw.
BUDGET = STDOUT_LIMIT - len(TRUNCATED) - FATAL_LINE_MAX - 1_000


def line_bound(image: ImageRef) -> int:
    """The longest result line the node agent can print for `image` (bytes)."""
    return (
        _LINE_FRAME
        + len(image.pinned)
        + len(image.digest)
        + len(image.tag)
        + _OUTCOME_MAX
        + _BYTES_MAX
        + _SECONDS_MAX
        + MAX_ERROR
    )


def split(images: list[ImageRef]) -> list[list[ImageRef]]:
    """`images` cut into commands, in order: each holds at most 50 images, an `Images`
    parameter within its limit, and result lines that fit in what the agent keeps."""
    commands: list[list[ImageRef]] = []
    current: list[ImageRef] = []
    output = parameter = 0
    for image in images:
        size, item = line_bound(image), len(image.agent_item) + 1
        if current and (
            len(current) == MAX_IMAGES_PER_COMMAND or output + size > BUDGET or parameter + item > IMAGES_MAX_LENGTH
        ):
            commands.append(current)
            current, output, parameter = [], 0, 0
        current.append(image)
        output += size
        parameter += item
    if current:
        commands.append(current)
    return commands


def split_by_repository(images: list[ImageRef]) -> list[list[ImageRef]]:
    """Like `split`, but every current image of a repository in the same command where they fit
    in one: an inventory unpins this tool's pins on the digests of its repositories that its
    command does not name (docs/node-agent.md), so a repository cut across two commands would
    lose the pins of its other half. Only a repository too large for one command is cut."""
    groups: dict[str, list[ImageRef]] = {}
    for image in images:
        groups.setdefault(image.repository, []).append(image)
    commands: list[list[ImageRef]] = []
    for group in groups.values():
        if commands and len(split([*commands[-1], *group])) == 1:
            commands[-1].extend(group)
        else:
            commands.extend(split(group))
    return commands
