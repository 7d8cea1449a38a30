"""The HTTP endpoints: each module parses its request, wires the core pieces together, and responds.

Errors are raised, never rendered here: ``proxy.app`` renders every error once.
"""
