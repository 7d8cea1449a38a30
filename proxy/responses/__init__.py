"""OpenAI's Responses API (``POST /v1/responses``) on tiergate's chat machinery.

A Responses call is routed like a chat call (task, tier, hops) and dispatched by the same dispatcher;
what differs per target is how it is spoken (``operation``):

- a target whose adapter serves the Responses API itself (``Provider.native_responses``: OpenAI-type
  providers) gets the client's body natively at its ``/responses``, model and tier params rewritten
  (``rewrite``), everything else untouched; its answer and events are relayed as they came.
- any other target (Anthropic, local handlers) gets the stateless subset translated to a chat
  request (``request``) and run through its chat adapter; the completion becomes a ``response`` object
  (``answer``) and the chunk stream typed Responses events (``events``). A field such a target cannot
  honour is a 400 naming it, never silently dropped.

State is provider-bound (``state``): a request that refers to, or asks for, state kept at the provider
(``previous_response_id``, ``conversation``, ``store: true``, ``background``, a stored ``prompt``,
built-in tools, item references, reasoning items) only ever tries targets of its first target's provider.
``relay`` relays an event stream to the client (usage from its terminal event, no ``[DONE]``); ``wire``
checks the client's body.
"""
