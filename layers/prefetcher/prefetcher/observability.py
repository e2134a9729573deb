"""X-Ray tracing, only when it is on.

Powertools' Tracer imports the X-Ray SDK, whose recorder builds a botocore client for sampling
rules as it is created: about 150 ms of every cold start (docs/benchmarks.md), even with tracing
disabled. So the Tracer is created only when the stack's `XRayTracing` parameter turns it on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

Handler = TypeVar("Handler", bound=Callable[..., Any])


def traced(enabled: bool) -> Callable[[Handler], Handler]:
    """Powertools' `capture_lambda_handler` when tracing is enabled; otherwise nothing."""

    def decorate(handler: Handler) -> Handler:
        if not enabled:
            return handler
        from aws_lambda_powertools import Tracer

        return cast(Handler, Tracer().capture_lambda_handler(handler))

    return decorate
