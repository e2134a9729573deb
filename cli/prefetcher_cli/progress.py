"""How `prefetcher wait` shows its progress: on a terminal, a live progress bar per cluster (rich);
without one (a CI log), one plain line each time something changes, and nothing when nothing
did; the final verdict as a last line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from prefetcher_cli.wait import ClusterProgress, Outcome, Snapshot


def _short(digest: str) -> str:
    return digest[:19] if digest else "(digest not known yet)"


def _failures(progress: ClusterProgress, limit: int = 3) -> str:
    shown = [f"{count} {state}: {reason or 'no reason given'}" for state, reason, count in progress.failures[:limit]]
    more = len(progress.failures) - limit
    return "; ".join(shown) + (f"; {more} more reason(s)" if more > 0 else "")


def cluster_line(snapshot: Snapshot, progress: ClusterProgress) -> str:
    line = (
        f"{progress.cluster}: {progress.holding}/{progress.live} live node(s) hold "
        f"{snapshot.repository}@{_short(snapshot.digest)} ({progress.percent}%, {progress.needed} needed "
        f"for {snapshot.percent:g}%); {progress.waiting} waiting; {progress.failed} failed"
    )
    return line + (f" ({_failures(progress)})" if progress.failed else "")


def verdict(snapshot: Snapshot, outcome: Outcome, timeout_text: str) -> str:
    image = f"{snapshot.repository}@{_short(snapshot.digest)}"
    if outcome is Outcome.REACHED:
        where = ", ".join(f"{c.cluster} {c.holding}/{c.live}" for c in snapshot.clusters)
        return f"warm: {image} is held by {snapshot.percent:g}% or more of the live nodes ({where})"
    if outcome is Outcome.MOVED:
        return (
            f"moved: {snapshot.repository}:{snapshot.tag or '(its tags)'} now points to {snapshot.moved_to}, a newer "
            f"push than {_short(snapshot.digest)}; wait for that digest instead"
        )
    if outcome is Outcome.UNREACHABLE:
        lost = [c for c in snapshot.clusters if c.unreachable]
        why = "; ".join(
            f"{c.cluster}: {c.failed} of {c.live} live node(s) failed for good, {c.needed} must hold it "
            f"({_failures(c)})"
            for c in lost
        )
        return f"cannot be reached: {why}"
    state = snapshot.note or "; ".join(cluster_line(snapshot, c) for c in snapshot.clusters)
    return f"timed out after {timeout_text}: {state}"


class PlainDisplay:
    """One line per change (a CI log): a cluster's line is printed again only when it changed."""

    def __init__(self, stream: IO[str], timeout_text: str) -> None:
        self.stream = stream
        self.timeout_text = timeout_text
        self.shown: dict[str, str] = {}

    def _print(self, key: str, text: str) -> None:
        if self.shown.get(key) == text:
            return
        self.shown[key] = text
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp} {text}", file=self.stream, flush=True)

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.note:
            self._print("", f"waiting: {snapshot.note}")
        for progress in snapshot.clusters:
            self._print(progress.cluster, cluster_line(snapshot, progress))

    def close(self, snapshot: Snapshot, outcome: Outcome) -> None:
        self._print("#verdict", verdict(snapshot, outcome, self.timeout_text))

    def abort(self) -> None:
        """Nothing to undo: every line is already out."""


class BarDisplay:
    """A live progress bar per cluster on a terminal: nodes holding / live, failures by reason."""

    def __init__(self, console: Console, timeout_text: str) -> None:
        self.console = console
        self.timeout_text = timeout_text
        self.bars = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} holding"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.bars.start()

    def _task(self, key: str, **fields: Any) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.bars.add_task(key, total=fields.pop("total", None), **fields)
        else:
            self.bars.update(self.tasks[key], **fields)

    def update(self, snapshot: Snapshot) -> None:
        if snapshot.note:
            self._task("waiting", detail=snapshot.note, total=None)
        for c in snapshot.clusters:
            if "waiting" in self.tasks:
                self.bars.remove_task(self.tasks.pop("waiting"))
            detail = f"{c.percent}% ({c.needed} needed) · {c.waiting} waiting · [red]{c.failed} failed[/red]"
            if c.failed:
                detail += f" [dim]{_failures(c, limit=2)}[/dim]"
            self._task(c.cluster, total=max(c.live, 1), completed=c.holding, detail=detail)

    def abort(self) -> None:
        self.bars.stop()

    def close(self, snapshot: Snapshot, outcome: Outcome) -> None:
        self.bars.stop()
        style = "green" if outcome is Outcome.REACHED else "red"
        self.console.print(verdict(snapshot, outcome, self.timeout_text), style=style, markup=False, highlight=False)


def display(stream: IO[str], timeout_text: str, terminal: bool | None = None) -> PlainDisplay | BarDisplay:
    """Bars when `stream` is a terminal, plain lines otherwise."""
    console = Console(file=stream)
    if terminal if terminal is not None else console.is_terminal:
        return BarDisplay(console, timeout_text)
    return PlainDisplay(stream, timeout_text)
