"""Stand-ins for the outside world, shipped for ``tiergate demo`` and used by the tests.

``openai`` and ``anthropic`` are small ASGI apps that speak each provider's real wire format (bodies,
SSE, errors, headers, scripted faults) with no network and no keys; ``loopback`` serves any ASGI app on
a real uvicorn socket on 127.0.0.1 inside the running event loop. Nothing in the product imports this
package except the demo.
"""
