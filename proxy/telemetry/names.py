"""Attribute and metric names: the OpenTelemetry GenAI conventions' (the "classic" generation, which
dashboards expect today) and tiergate's own, in one place so a rename is one line."""

from __future__ import annotations

# --- GenAI span and metric attributes
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
REASONING_TOKENS = "gen_ai.usage.reasoning.output_tokens"
TOKEN_TYPE = "gen_ai.token.type"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_STATUS = "http.response.status_code"
HTTP_ROUTE = "http.route"

CHAT = "chat"  # gen_ai.operation.name for POST /v1/chat/completions
EMBEDDINGS = "embeddings"  # ... for POST /v1/embeddings

# --- tiergate's own attributes
TASK = "tiergate.task"
TASK_SOURCE = "tiergate.task_source"
TIER = "tiergate.tier"
TARGET = "tiergate.target"  # provider::model, as in logs and x-tiergate-* headers
COST = "tiergate.cost_usd"
CACHE = "tiergate.cache"
ATTEMPT = "tiergate.attempt"  # on an attempt span: its number; on the request span: how many were made
FALLBACK = "tiergate.fallback"
TTFT_MS = "tiergate.ttft_ms"
BACKGROUND = "tiergate.background"
BREAKER_STATE = "tiergate.breaker.state"

# --- metrics: the GenAI conventions'
TOKEN_USAGE = "gen_ai.client.token.usage"
CLIENT_DURATION = "gen_ai.client.operation.duration"
SERVER_DURATION = "gen_ai.server.request.duration"
SERVER_TTFT = "gen_ai.server.time_to_first_token"
# The conventions' advised bucket boundaries for each.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# --- metrics: tiergate's own
REQUESTS = "tiergate.requests"
COST_METRIC = "tiergate.cost.usd"
CACHE_METRIC = "tiergate.cache.results"
FALLBACKS = "tiergate.fallbacks"
BREAKER = "tiergate.breaker"
LEDGER_QUEUED = "tiergate.ledger.queued"
LEDGER_WRITTEN = "tiergate.ledger.written"
LEDGER_DROPPED = "tiergate.ledger.dropped"
