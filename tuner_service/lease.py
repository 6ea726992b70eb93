"""Leases: what Recommend would answer for a model's steady requests, granted ahead so that the request
path needs only Match (the plugin's proxy_plugin/lease.py holds and renews them).

A lease states the context and num_batch the tuner believes loaded and, per recent template, what the
request's need is checked against. A request it covers gets what Recommend would answer at that state
("keep loaded"): its need fits the loaded context, so the policy neither grows nor needs a reload for it.
The plugin still sends each covered request's Recommend off the request path, so the policy sees every
demand (claims, rent, shrink decisions) as before; an answer that differs from the lease ends it. Read
only: granting a lease changes no learned state.
"""

from __future__ import annotations

import itertools

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

from .policy import Policy

LEASE_MS = 5_000  # a lease's life: learned changes (a larger output, a truncation floor) reach the plugin by then
MAX_RULES = 256  # the model's most recently used templates listed in a lease


def grant(policy: Policy, key: str, cap: int) -> tuner_pb2.LeaseResponse:
    """The lease of the model ``key`` (host and model) as the policy stands; ``cap`` its hard num_ctx cap."""
    model = policy.models.get(key)
    if model is None:
        return tuner_pb2.LeaseResponse(reason_code="unknown_model")
    if not model.managed or not model.loaded_ctx:
        return tuner_pb2.LeaseResponse(reason_code="unmanaged")
    if model.displaced or model.relieve[0]:  # its next request reloads it: Recommend must decide that one
        return tuner_pb2.LeaseResponse(reason_code="change_pending")
    if cap and model.loaded_ctx > cap:  # a cap lowered since the load: Recommend clamps
        return tuner_pb2.LeaseResponse(reason_code="over_cap")
    recent = itertools.islice(reversed(model.templates.items()), MAX_RULES)  # most recent first; never all of them
    return tuner_pb2.LeaseResponse(
        granted=True,
        num_ctx=model.loaded_ctx,
        num_batch=model.loaded_batch,
        ttl_ms=LEASE_MS,
        units_to_tokens_ratio=policy.ratio_upper(model),
        overhead_tokens_per_message=policy.s.chat_overhead_tokens,
        num_ctx_cap=cap,
        rules=[
            tuner_pb2.LeaseRule(
                template_id=template_id,
                output_tokens=min(policy.output_reserve(template, 0), 2**32 - 1),
                floor_ctx=min(template.floor_ctx, 2**32 - 1),
                confidence=policy.confidence(template),
            )
            for template_id, template in recent
            if not template.pinned
        ],
    )
