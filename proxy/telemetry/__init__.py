"""OpenTelemetry for tiergate: traces and metrics with the GenAI conventions' names, off unless asked for.

The core never imports this package (an import-linter contract): dispatch reports what it did as an
``Outcome`` and tells an optional ``proxy.outcome.Observer`` about each attempt; the edge hands this
package the finished ledger record. From those it builds one SERVER span per client request and one
CLIENT span per upstream attempt, and records the metrics.

    config     the OTEL_* variables read once: which exporters, the content capture switch
    pipeline   tracer and meter providers, exporters and readers by name (a table), shutdown
    tracing    the spans of one request (an Observer) and of a background generation
    content    prompts and completions as the conventions' message attributes, redacted (opt-in)
    metrics    the instruments, recorded from a finished record; observable breaker and ledger state
    service    Telemetry: the per-process object the gateway holds (None when everything is off)
    names      the attribute and metric names, in one place
"""
