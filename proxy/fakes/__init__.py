"""Stand-ins for the outside world, shipped for ``tiergate demo`` and used by the tests.

``openai`` and ``anthropic`` are small ASGI apps that speak each provider's real wire format (bodies,
SSE, errors, headers, scripted faults; ``responses`` is the OpenAI fake's Responses API) with no network
and no keys (``proxy.loopback`` serves them on a real socket); they answer what a request asks for:
``schema`` builds values valid against a JSON Schema (structured output, tool arguments, the Responses
API's ``text.format``; ``pattern`` the strings a regex finds), ``embeddings`` the vectors of the OpenAI
fake's ``/v1/embeddings``. ``upstreams`` serves both fakes on one port (``tiergate fake-upstream``).
``traffic`` is a simulated app's labelled calls (call sites per task, varied fillers), for training the
classifier in tests and benchmarks. Nothing in the product imports this package except the demo and the
CLI that starts them.
"""
