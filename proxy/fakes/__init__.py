"""Stand-ins for the outside world, shipped for ``tiergate demo`` and used by the tests.

``openai`` and ``anthropic`` are small ASGI apps that speak each provider's real wire format (bodies,
SSE, errors, headers, scripted faults; ``responses`` is the OpenAI fake's Responses API) with no network
and no keys (``proxy.loopback`` serves them on a
real socket). ``traffic`` is a simulated app's labelled calls (call sites per task, varied fillers), for
training the classifier in tests and benchmarks. Nothing in the product imports this package except the demo.
"""
